"""The kinds of value a flag takes: parse what users type, and format defaults the way they would type them.

``parse_duration`` is the one duration parser (the settings, ``timespec`` and the commands use it); every
parser raises ``ValueError`` saying what was expected (``"a duration such as 500ms, ..."``), for the
caller to frame with the flag (``options.invalid``) or the value. Pure functions: no flags, no environment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_NUMBER_UNIT: Final = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")
DURATION_EXPECTED: Final = "a duration such as 500ms, 30s, 15m, 2h or 7d"


def parse_duration(text: str, *, positive: bool = False) -> float:
    """``"1.5"``, ``"500ms"``, ``"30s"``, ``"15m"``, ``"2h"``, ``"7d"`` -> seconds.

    The one duration parser: a ``ValueError`` says what was expected (``"a duration such as ..."``), for the
    caller to frame with the flag (``invalid``) or the value (``timespec.parse_duration``).
    """
    m = _NUMBER_UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or (unit not in _DURATION_UNITS and unit != ""):
        raise ValueError(DURATION_EXPECTED)
    value = float(m.group(1)) * _DURATION_UNITS.get(unit, 1.0)
    if not math.isfinite(value):
        raise ValueError("a finite duration")
    if positive and value <= 0:
        raise ValueError("a positive duration")
    return value


def parse_size(text: str) -> int:
    """``"4096"``, ``"512MiB"``, ``"10GB"`` -> bytes; ``"-1"`` means unlimited."""
    m = _NUMBER_UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ValueError("a size in bytes such as 1048576, 512MiB or 10GB (-1: unlimited)")
    value = float(m.group(1))
    if value == -1:
        return -1
    return int(value * _SIZE_UNITS[unit])


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("an integer") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_durations(text: str) -> tuple[float, ...]:
    try:
        return tuple(parse_duration(part) for part in parse_list(text))
    except ValueError:
        raise ValueError("a comma-separated list of durations such as 1s,5s,30s") from None


PARSERS: Final[dict[str, Callable[[str], Any]]] = {
    "switch": parse_bool,
    "append": parse_list,
    "str": str,
    "int": parse_int,
    "float": parse_float,
    "bool": parse_bool,
    "duration": parse_duration,
    "size": parse_size,
    "list": parse_list,
    "durations": parse_durations,
}


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_value(kind: str, value: Any) -> str:
    """A default as a user would type it."""
    if kind == "duration":
        return format_duration(float(value))
    if kind == "durations":
        return ",".join(format_duration(v) for v in value)
    if kind == "list":
        return ",".join(value)
    if kind == "size":
        return "unlimited (-1)" if value == -1 else str(value)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)
