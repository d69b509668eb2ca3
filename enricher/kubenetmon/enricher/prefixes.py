"""Longest-prefix match over IPv4 and IPv6 prefixes, on raw 4- and 16-byte addresses.

Why it exists: the enricher classifies every remote address against ~50k cloud prefixes, so a lookup
must cost about as much as one C-level binary search. The table flattens (possibly nested) CIDR
prefixes into disjoint address segments once, at build time; a lookup is then ``int.from_bytes`` plus
one ``bisect`` on a sorted list of segment starts. Layers let a later source override an earlier
one wherever it applies, whatever the prefix lengths (user ranges over provider ranges).

It must not do I/O, parse provider formats or know what the values mean: values are opaque.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Generic, TypeVar

V = TypeVar("V")
W = TypeVar("W")

BITS: Final = {4: 32, 16: 128}
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """``"10.0.0.0/8"`` or a bare address (a host prefix); host bits set are tolerated and cleared."""
    return ipaddress.ip_network(text.strip(), strict=False)


def _segments(entries: Iterable[tuple[int, int, V]], top: int) -> tuple[list[int], list[V | None]]:
    """Disjoint segments covering ``[0, top]``; each takes the value of its longest covering prefix.

    ``entries`` are (first, last, value) with CIDR nesting: two prefixes are disjoint or one
    contains the other. Later duplicates of the same prefix have been resolved by the caller.
    """
    starts: list[int] = [0]
    values: list[V | None] = [None]

    def emit(first: int, value: V | None) -> None:
        if starts[-1] == first:
            values[-1] = value
        elif values[-1] is not value:
            starts.append(first)
            values.append(value)

    # Shorter (containing) prefixes first at equal starts, so the stack holds the nesting.
    ordered = sorted(entries, key=lambda e: (e[0], -e[1]))
    stack: list[tuple[int, V]] = []
    for first, last, value in ordered:
        while stack and stack[-1][0] < first:
            end, _ = stack.pop()
            emit(end + 1, stack[-1][1] if stack else None)
        emit(first, value)
        stack.append((last, value))
    while stack:
        end, _ = stack.pop()
        if end < top:
            emit(end + 1, stack[-1][1] if stack else None)
    return starts, values


def _overlay(
    base: tuple[list[int], list[V | None]],
    layer: tuple[list[int], list[V | None]],
    combine: Callable[[V | None, V], V],
) -> tuple[list[int], list[V | None]]:
    """Segments of ``base`` with ``layer`` on top: where the layer has a value, ``combine`` decides."""
    bounds = sorted(set(base[0]) | set(layer[0]))
    starts: list[int] = []
    values: list[V | None] = []
    for first in bounds:
        below = base[1][bisect_right(base[0], first) - 1]
        above = layer[1][bisect_right(layer[0], first) - 1]
        value = below if above is None else combine(below, above)
        if values and values[-1] is value:
            continue
        starts.append(first)
        values.append(value)
    return starts, values


def _keep_top(below: V | None, above: V) -> V:
    return above


Segments = tuple[list[int], list[Any]]
_TOP_SHIFT: Final = 16
"""IPv4 first level: one bucket per /16, so most lookups need no search at all."""


def _buckets(segments: Segments) -> list[tuple[list[int] | None, Any]]:
    """Per /16: ``(None, value)`` if one segment covers it, else the segments inside it to bisect."""
    starts, values = segments
    out: list[tuple[list[int] | None, Any]] = []
    size = 1 << _TOP_SHIFT
    for bucket in range(1 << (32 - _TOP_SHIFT)):
        lo = bucket << _TOP_SHIFT
        j = bisect_right(starts, lo) - 1
        k = bisect_left(starts, lo + size, j + 1)
        if k - j == 1:
            out.append((None, values[j]))
        else:
            out.append(([lo, *starts[j + 1 : k]], values[j:k]))
    return out


class PrefixTable(Generic[V]):
    """An immutable longest-prefix-match table over both address families."""

    __slots__ = ("_top", "_v4", "_v6", "prefixes")

    def __init__(
        self,
        layers: Sequence[Iterable[tuple[Network, V]]],
        *,
        combine: Callable[[V | None, V], V] = _keep_top,
    ) -> None:
        """Build from ``layers``, lowest first; in each, a repeated prefix keeps its last value."""
        self.prefixes = 0
        tables: dict[int, Segments] = {}
        for width, version in ((32, 4), (128, 6)):
            merged: Segments | None = None
            for layer in layers:
                seg = _segments(self._entries(layer, version), (1 << width) - 1)
                merged = seg if merged is None else _overlay(merged, seg, combine)
            tables[version] = merged if merged is not None else ([0], [None])
        self._set(tables[4], tables[6])

    def _set(self, v4: Segments, v6: Segments) -> None:
        self._v4 = v4
        self._v6 = v6
        self._top = _buckets(v4)

    def _entries(self, layer: Iterable[tuple[Network, V]], version: int) -> list[tuple[int, int, V]]:
        unique: dict[tuple[int, int], V] = {}
        for net, value in layer:
            if net.version == version:
                unique[(int(net.network_address), int(net.broadcast_address))] = value
        self.prefixes += len(unique)
        return [(first, last, value) for (first, last), value in unique.items()]

    @property
    def segments(self) -> int:
        """Number of disjoint segments (both families): the size of the lookup structure."""
        return len(self._v4[0]) + len(self._v6[0])

    def lookup(self, addr: bytes) -> V | None:
        """The value of the longest prefix containing ``addr`` (4 or 16 raw bytes), or None."""
        if len(addr) == 16:
            if addr[:12] != _V4_MAPPED:
                v6, values = self._v6
                return values[bisect_right(v6, int.from_bytes(addr, "big")) - 1]  # type: ignore[no-any-return]
            addr = addr[12:]
        ip = int.from_bytes(addr, "big")
        starts, value = self._top[ip >> _TOP_SHIFT]
        if starts is None:
            return value  # type: ignore[no-any-return]
        return value[bisect_right(starts, ip) - 1]  # type: ignore[no-any-return]

    def lookup_text(self, text: str) -> V | None:
        """Same as ``lookup`` for a textual address (tests, tools)."""
        return self.lookup(ipaddress.ip_address(text).packed)

    def map_values(self, fn: Callable[[V | None], W]) -> PrefixTable[W]:
        """The same segments with each distinct value (and "no match") replaced by ``fn(value)``."""
        out: PrefixTable[W] = PrefixTable.__new__(PrefixTable)
        out.prefixes = self.prefixes
        none = fn(None)
        cache: dict[int, W] = {}

        def mapped(value: V | None) -> W:
            if value is None:
                return none
            key = id(value)
            if key not in cache:
                cache[key] = fn(value)
            return cache[key]

        out._set(
            (self._v4[0], [mapped(v) for v in self._v4[1]]),
            (self._v6[0], [mapped(v) for v in self._v6[1]]),
        )
        return out
