"""Columns that remember how they were built, so the ENRICHED encoder packs each part only once.

Why it exists: most columns of an ENRICHED message repeat themselves: constants (interval, observer,
environment, ...) and each record's attributes twice over (its ``out`` row, then its ``in`` row).
msgpack packs value by value; ``pack_column`` packs a ``Spans`` column part by part, each part once,
and repeats its bytes. The result is byte for byte what msgpack writes for the same values (a test
checks it), for a fraction of the work.

A ``Spans`` is a real list holding every value, so any other consumer sees an ordinary column; it
refuses to be mutated, so its parts always describe its values. This module must not know what the
columns mean, and must not change the wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, SupportsIndex

import msgpack

Span = tuple[Sequence[Any], int]
"""Values, and how many times they follow each other."""


class Spans(list[Any]):
    """A read-only column made of spans: ``Spans((values, times), ...)``."""

    __slots__ = ("spans",)
    spans: tuple[Span, ...]

    def __init__(self, *spans: Span) -> None:
        super().__init__()
        for values, times in spans:
            if len(values) == 1:
                list.extend(self, [values[0]] * times)
            else:
                for _ in range(times):
                    list.extend(self, values)
        self.spans = spans

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a Spans column is read-only (copy it with list() to change it)")

    append = extend = insert = pop = remove = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = _read_only

    def __iadd__(self, other: Iterable[Any]) -> NoReturn:  # type: ignore[misc]
        self._read_only()

    def __imul__(self, other: SupportsIndex) -> NoReturn:
        self._read_only()


def twice(values: Sequence[Any]) -> Spans:
    """``values`` followed by ``values`` again (``Spans((values, 2))``, built faster)."""
    column = list.__new__(Spans)
    list.extend(column, values)
    list.extend(column, values)
    column.spans = ((values, 2),)
    return column


def repeated(value: Any, times: int) -> Spans:
    """``value`` ``times`` over (``Spans(((value,), times))``, built faster)."""
    column = list.__new__(Spans)
    list.extend(column, [value] * times)
    column.spans = (((value,), times),)
    return column


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items."""
    if length < 16:
        return bytes((0x90 | length,))
    if length <= 0xFFFF:
        return b"\xdc" + struct.pack("!H", length)
    return b"\xdd" + struct.pack("!I", length)


def pack_column(column: Sequence[Any], packer: msgpack.Packer) -> list[bytes | memoryview]:
    """The pieces of ``packer.pack(column)`` (join them), packing each span of a ``Spans`` once."""
    if type(column) is not Spans:
        return [packer.pack(column)]
    pieces: list[bytes | memoryview] = [array_header(len(column))]
    for values, times in column.spans:
        n = len(values)
        body = memoryview(packer.pack(values))[1 if n < 16 else 3 if n <= 0xFFFF else 5 :]  # its header
        pieces += [body] * times if n > 1 else [bytes(body) * times]
    return pieces
