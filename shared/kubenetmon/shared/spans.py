"""Columns that remember how they were built, so the ENRICHED encoder packs each part only once.

Why it exists: most columns of an ENRICHED message repeat themselves: constants (interval, observer,
environment, ...) and each record's attributes twice over (its ``out`` row, then its ``in`` row).
msgpack packs value by value; ``pack_columns`` packs a ``Spans`` column part by part, each part once,
and repeats its bytes. The result is byte for byte what msgpack writes for the same values (a test
checks it), for a fraction of the work. On the enricher's path nobody reads the values themselves,
so a ``Spans`` builds its list of values only when something does (indexing, iterating, comparing).

A ``Spans`` is a read-only ``Sequence``, not a ``list``: anything that needs a list (msgpack, json)
fails loudly instead of seeing a half-built one. This module must not know what the columns mean, and
must not change the wire format.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import xor
from typing import Any, overload

import msgpack

Span = tuple[Sequence[Any], int]
"""Values, and how many times they follow each other."""


class Spans(Sequence[Any]):
    """A read-only column made of spans: ``Spans((values, times), ...)``."""

    __slots__ = ("_length", "_values", "spans")

    def __init__(self, *spans: Span) -> None:
        self.spans = spans
        self._length = sum(len(values) * times for values, times in spans)
        self._values: list[Any] | None = None

    def values(self) -> list[Any]:
        """Every value, as a (new, cached) list."""
        if self._values is None:
            out: list[Any] = []
            for values, times in self.spans:
                out += [values[0]] * times if len(values) == 1 else list(values) * times
            self._values = out
        return self._values

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self.values()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Spans):
            return self.values() == other.values()
        if isinstance(other, list | tuple):
            return self.values() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Spans({self.values()!r})"


def twice(values: Sequence[Any]) -> Spans:
    """``values`` followed by ``values`` again."""
    column: Spans = _new(Spans)  # the same as Spans((values, 2)), for a fraction of the calls
    column.spans, column._length, column._values = ((values, 2),), 2 * len(values), None
    return column


def repeated(value: Any, times: int) -> Spans:
    """``value``, ``times`` over."""
    column: Spans = _new(Spans)
    column.spans, column._length, column._values = (((value,), times),), times, None
    return column


class Flipped(tuple[int, ...]):
    """Integers that are ``base``'s with ``mask`` XORed in: a tuple of them, which remembers how it was
    built, so the v2 layout sends ``base`` (which it sends anyway) and the mask instead of the values."""

    base: Sequence[int]
    mask: int


def flipped(base: Sequence[int], mask: int) -> Flipped:
    """``base``'s values, each XOR ``mask``."""
    column = Flipped(map(xor, base, repeat(mask)))
    column.base, column.mask = base, mask
    return column


_new = object.__new__
_SMALL_HEADERS = tuple(bytes((0x90 | n,)) for n in range(16))


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items."""
    if length < 16:
        return _SMALL_HEADERS[length]
    if length <= 0xFFFF:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def pack_columns(columns: Iterable[Sequence[Any]], packer: msgpack.Packer) -> list[bytes | memoryview]:
    """The pieces of ``packer.pack`` of each column (join them), packing each span of a ``Spans`` once."""
    pack, header = packer.pack, array_header
    pieces: list[bytes | memoryview] = []
    for column in columns:
        if type(column) is not Spans:
            pieces.append(pack(column))
            continue
        pieces.append(header(column._length))
        for values, times in column.spans:
            n = len(values)
            if n == 1:
                pieces.append(pack(values[0]) * times)
            else:
                body = memoryview(pack(values))[1 if n < 16 else 3 if n <= 0xFFFF else 5 :]  # its header
                pieces += [body] * times
    return pieces
