"""Byte counts and money for people: the one ``human_bytes``, in powers of 1000 (as the README and price
books count), the one ``usd``, and ``csv_cell`` (booleans as ``true``/``false``, as JSON writes them).

Two renderings, both kept exactly where they are shown: ``top`` and ``cost`` tables fit three significant
digits in a column (``1.23 KB``, up to ``EB``); the replay summaries print one decimal with thousands
separators (``1,234.5 GB``, up to ``TB``). Pure functions: no I/O, no locale.
"""

from __future__ import annotations

import math
from typing import Final

_UNITS: Final = ("B", "KB", "MB", "GB", "TB", "PB", "EB")


def human_bytes(n: float, *, grouped: bool = False) -> str:
    """``999 B``, ``1.23 KB``, ``12.3 MB``, ``123 GB``; ``grouped``: ``999 B``, ``1.2 KB``, ``1,234.5 TB``."""
    return _grouped(n) if grouped else _significant(n)


def _significant(n: float) -> str:
    value, unit = float(n), 0
    while abs(value) >= 999.5 and unit < len(_UNITS) - 1:
        value, unit = value / 1000.0, unit + 1
    if unit == 0:
        return f"{value:.0f} B"
    digits = 2 if abs(value) < 9.995 else 1 if abs(value) < 99.95 else 0
    return f"{value:.{digits}f} {_UNITS[unit]}"


def _grouped(n: float) -> str:
    for unit in _UNITS[:5]:
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def usd(value: float) -> str:
    """``$1,234.56``; an amount under a cent keeps two significant digits (``$0.0042``, ``$0.0000073``) so
    that a small cost never reads as zero; ``$0.00`` only for nothing."""
    if value == 0 or abs(value) >= 0.005 or not math.isfinite(value):
        return f"${value:,.2f}"
    digits = min(1 - math.floor(math.log10(abs(value))), 15)  # below 10^-14 USD: shown as zero
    return f"${value:.{digits}f}"


def csv_cell(value: object) -> object:
    """A value as a CSV cell: booleans ``true``/``false`` (Python's ``True`` reads as a string elsewhere)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
