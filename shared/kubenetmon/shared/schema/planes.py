"""The RAW v2 column layout: each column of a message as one binary, integers split into byte planes.

Why: a RAW row (v1) is a msgpack array of fifteen cells, each with its own type header; the counters are
the only bytes that really vary, and S2 (the stream's compression) finds little to remove between rows
written that way: 52 B a record accounted, 33 B on disk. Written by column, the bytes of one kind
follow each other: the protocol, family and zone planes are one byte repeated, a port's high byte
plane repeats, the reply tuple's columns repeat the original's (no NAT), a counter's high planes are
zeros. S2 removes those runs, and what is left is mostly the counters' low bytes: about 20 B a record
on disk. v2 writes, in ``RawRow`` field order, one entry per field:

- an integer field: ``[w, planes]``, ``w`` (1 to 8) bytes per value, and ``planes`` the ``n * w``
  bytes of byte 0 (the least significant) of every row's value, then byte 1 of every row's, and so on;
- an address field: one binary, the rows' addresses one after another, each as long as its row's
  family says (4 or 16 bytes).

This module knows no field: the caller says which are addresses and gives each row's address length.
It checks the structure only (types, widths, lengths against the row count, before allocating
anything); the values are the caller's to check. An address belongs to its row only through the
lengths the rows' families give: a forged message whose families cut the same bytes differently is
another well-formed message, as a forged v1 row would be; a cut that does not add up is refused.
Pure: no I/O.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Any, Final

MAX_WIDTH: Final = 8
"""A value is at most 64 bits."""

_CODES: Final = {array(code).itemsize: code for code in "QLIHB"}
"""Array type codes by item size (the platform's: 1, 2, 4 and 8 exist on every CPython)."""
_ITEM: Final = tuple(next(size for size in (1, 2, 4, 8) if size >= w) for w in range(MAX_WIDTH + 1))
"""The array item size that holds ``w`` bytes (index ``w``)."""
_BIG: Final = sys.byteorder == "big"


class PlanesError(ValueError):
    """A v2 column that does not hold together (the caller turns it into a ``DecodeError``)."""


def pack_ints(values: Sequence[int]) -> list[Any]:
    """``[w, planes]`` of integers in [0, 2**64) (``ValueError`` or ``OverflowError`` otherwise), ``w``
    the fewest bytes that hold the largest."""
    try:
        return [1, bytes(values)]  # most columns (protocol, family, zone, packets) fit a byte: in C
    except ValueError:
        pass
    top = max(values)
    w = (top.bit_length() + 7) // 8
    if w > MAX_WIDTH:
        raise ValueError(f"{top} does not fit in {MAX_WIDTH} bytes")
    size = _ITEM[w]
    words = array(_CODES[size], values)
    if _BIG:
        words.byteswap()
    raw = words.tobytes()
    return [w, b"".join([raw[k::size] for k in range(w)])]


def unpack_ints(entry: Any, n: int) -> list[int]:
    """The ``n`` integers of a ``[w, planes]`` entry."""
    if type(entry) is not list or len(entry) != 2:
        raise PlanesError("an integer column must be [width, planes]")
    w, planes = entry
    if type(w) is not int or not 1 <= w <= MAX_WIDTH or type(planes) is not bytes:
        raise PlanesError(f"an integer column's width must be 1 to {MAX_WIDTH}, its planes a binary")
    if len(planes) != n * w:  # before allocating anything: the rows are the caller's, already bounded
        raise PlanesError(f"{len(planes)} bytes of planes for {n} values of {w} bytes")
    if w == 1:
        return list(planes)
    size = _ITEM[w]
    words = bytearray(n * size)
    for k in range(w):
        words[k::size] = planes[k * n : (k + 1) * n]
    values = array(_CODES[size])
    values.frombytes(words)
    if _BIG:
        values.byteswap()
    return values.tolist()


def pack_addresses(values: Sequence[bytes]) -> bytes:
    """The addresses one after another."""
    return b"".join(values)


def unpack_addresses(blob: Any, lengths: int | Sequence[int], n: int) -> list[bytes]:
    """The ``n`` addresses of a binary; ``lengths``: every address's length, or each row's."""
    if type(blob) is not bytes:
        raise PlanesError("an address column must be a binary")
    if isinstance(lengths, int):
        total = n * lengths
    elif len(lengths) != n:
        raise PlanesError(f"{len(lengths)} address lengths for {n} rows")
    else:
        total = sum(lengths)
    if len(blob) != total:  # before building anything for n rows
        raise PlanesError(f"{len(blob)} bytes of addresses, the rows' families want {total}")
    if isinstance(lengths, int):
        fmt = f"{lengths}s" * n
    else:
        fmt = "".join([f"{length}s" for length in lengths])
    # in C (a slice a row is 10x slower); a Struct of its own: ``struct.unpack`` would keep up to 100
    # compiled formats of forged sizes in its cache
    return list(struct.Struct(fmt).unpack(blob))
