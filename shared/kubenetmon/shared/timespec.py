"""Parsing of the times and durations users type: ``10m``, ``-2h``, ``2026-11-26T05:00:00Z``, ``now``.

Pure functions, no clock reads except through the ``now`` argument, so they are exact to test.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kubenetmon.shared import values
from kubenetmon.shared.errors import ConfigError


def parse_duration(text: str) -> float:
    """A positive duration (``90``, ``90s``, ``10m``, ``2h``, ``1d``) in seconds, or ``ConfigError``.

    The parser is ``values.parse_duration``; this only frames its word for a value given without a
    settings field: ``'soon' is not a duration such as ...``.
    """
    try:
        return values.parse_duration(text, positive=True)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not {exc}") from None


def parse_time(text: str, *, now: float) -> float:
    """An instant as Unix seconds: RFC 3339 (``Z`` or an offset; naive means UTC), ``now``,
    a relative ``-2h`` / ``-30m`` (before ``now``), or a Unix timestamp."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time (examples: -2h, now, 2026-11-26T05:00:00Z, 1795000000)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_time(ts: float) -> str:
    """Unix seconds -> RFC 3339 UTC with a ``Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
