"""Source coverage, the pure part: link byte deltas per poll, and which rows cross the node boundary.

Why it exists: a conntrack meter is blind to traffic that bypasses netfilter, and says nothing about
it. Next to each report's metered bytes the ledger carries the bytes its node's external interfaces
counted in the same span (``LinkMeter``, fed every poll by ``links``) and the bytes of the report's rows
whose flow crosses the node boundary (``Boundary``). Their ratio, per node and interval, is what
``check --coverage`` judges.

A flow crosses the node boundary unless both of its endpoints (the original source and the reply
source, the same two the labeler uses) are inside the node: one of the node's own addresses, or a
destination the node routes without a gateway to an interface that is not external (its pods' veths,
a bridge). A route through a gateway or a tunnel's next hop, or out of an external interface, leads
outside. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import compress
from operator import add, and_, itemgetter, not_
from typing import Any

from kubenetmon.agent.links import Layout


class LinkMeter:
    """Byte counters of the external interfaces -> bytes since the previous read, summed."""

    def __init__(self, last: Mapping[int, int] | None = None) -> None:
        self.last: dict[int, int] = dict(last or {})
        """Interface index -> its counter at the last read."""

    def observe(self, counters: Mapping[int, int]) -> int:
        """Bytes the interfaces in ``counters`` moved since they were last read (a new one: none yet; a
        counter that went back, such as a re-created device, counts from zero)."""
        grown = 0
        for index, value in counters.items():
            old = self.last.get(index)
            if old is not None:
                grown += value - old if value >= old else value
        self.last = dict(counters)
        return grown


class Boundary:
    """Which addresses are inside the node (see the module docstring)."""

    def __init__(self, layout: Layout, *, external: Iterable[int]) -> None:
        outside = set(external)
        self.exact: set[bytes] = set(layout.addresses)
        self._prefixes: dict[tuple[int, int], set[int]] = {}
        """(address length, prefix length) -> the prefixes' leading bits, as integers."""
        for dst, length, oif, gateway in layout.routes:
            if length == 0 or gateway or not oif or oif in outside:
                continue
            bits = len(dst) * 8
            if length >= bits:
                self.exact.add(dst)
            else:
                self._prefixes.setdefault((len(dst), length), set()).add(
                    int.from_bytes(dst, "big") >> (bits - length)
                )
        self._order = sorted(self._prefixes, key=lambda key: -key[1])

    def inside(self, ip: bytes) -> bool:
        if ip in self.exact:
            return True
        value, size = int.from_bytes(ip, "big"), len(ip)
        for key in self._order:
            if key[0] == size and value >> (size * 8 - key[1]) in self._prefixes[key]:
                return True
        return False

    def crossing_bytes(self, rows: Sequence[Any]) -> int:
        """Bytes (both directions) of the RAW rows whose flow crosses the node boundary.

        Column-wise, in C where it can be: each distinct address is judged once."""
        if not rows:
            return 0
        first = list(map(_ORIG_SRC, rows))  # original source
        second = list(map(_REPLY_SRC, rows))  # reply source
        inside = {ip for ip in {*first, *second} if self.inside(ip)}
        both = map(and_, map(inside.__contains__, first), map(inside.__contains__, second))
        sizes = map(add, map(_ORIG_BYTES, rows), map(_REPLY_BYTES, rows))
        return sum(compress(sizes, map(not_, both)))


_ORIG_SRC, _REPLY_SRC, _ORIG_BYTES, _REPLY_BYTES = (itemgetter(i) for i in (3, 7, 12, 14))
