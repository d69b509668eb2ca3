"""The delta table: cumulative kernel counters in, exact per-interval deltas out. Pure: no I/O, no clock.

Every conntrack is known by its key (zone, tuples, creation time, conntrack id; see ``ctnetlink``). The
creation time matters: without it a new conntrack that reuses a destroyed one's memory and tuples has the
same key, and its sighting and DESTROY were taken for stale repeats of the old one's (whole short flows lost
under churn). The table keeps the
counters of each flow as last seen and adds ``seen now - seen before`` to the open interval:

- a dump sighting of a known flow adds the growth since the previous sighting; of a new flow, all its
  counters (they accrued since it was created: kubenetmon counted them the same way);
- a DESTROY event adds the growth up to the final counters, and the flow is forgotten; a stale dump
  sighting of a flow already destroyed is ignored, so a race between a dump and an event never counts
  twice;
- a flow absent from ``keep_missing`` consecutive consistent dumps is forgotten (its DESTROY event was lost);
  until then an absent flow keeps its baseline, in case a late event or sighting arrives;
- above ``max_flows`` a new flow gets no baseline: it is counted later, in full, when there is room or when
  it is destroyed. Nothing is dropped silently; every such case is counted in ``stats``.

Counters only grow for one conntrack; if one shrinks (someone zeroed it), its current value is the delta.
Deltas are kept per flow as one packed integer (four 64-bit fields) and folded into report rows by
``report``, which applies the agent's drop rules (labeling spec section 1) and counts each drop by reason.
"""

from __future__ import annotations

from collections import Counter, deque
from itertools import compress, repeat
from operator import ne
from typing import Final

from kubenetmon.agent.ctnetlink import COUNTERS, INSTANCE, NO_START, ZERO_COUNTERS, decode_key
from kubenetmon.shared.schema import FLOW_FIELDS, RawRow

_M64: Final = (1 << 64) - 1
REPORTED_PROTOCOLS: Final = frozenset({6, 17})
WITH_SCTP: Final = frozenset({6, 17, 132})


def pack(opk: int, oby: int, rpk: int, rby: int) -> int:
    """Four 64-bit counters as one integer (sums of packed values never carry across fields)."""
    return opk | oby << 64 | rpk << 128 | rby << 192


def unpack(value: int) -> tuple[int, int, int, int]:
    return (value & _M64, value >> 64 & _M64, value >> 128 & _M64, value >> 192 & _M64)


class FlowTable:
    """Baselines per flow and the open interval's deltas."""

    def __init__(self, *, max_flows: int = 2_000_000, keep_missing: int = 3) -> None:
        self.max_flows = max_flows
        self.keep_missing = keep_missing
        self.last: dict[bytes, bytes] = {}
        """key -> counters blob at the latest sighting (dump or, for none yet, nothing)."""
        self.deltas: dict[bytes, int] = {}
        """key -> packed deltas accumulated in the open interval."""
        self.missing: deque[dict[bytes, bytes]] = deque()
        """Flows absent from the latest dumps, newest first, with their last counters."""
        self.destroyed: deque[set[bytes]] = deque([set()])
        """Keys finalised by DESTROY events, newest generation first (one generation per dump)."""
        self.stats: Counter[str] = Counter()
        self._previous: dict[bytes, bytes] | None = None
        self._legacy_dumps = 0
        """Dumps left in which a flow may still match a baseline saved without its creation time."""

    def adopt_legacy_keys(self) -> None:
        """The baselines came from a state file whose keys had no creation time (converted with
        ``NO_START``). If the kernel already recorded creation times, those flows now show up under keys
        with one: for the next few dumps a first sighting or an event also looks for its key without the
        creation time, so an upgrade never counts a flow's past bytes again."""
        self._legacy_dumps = self.keep_missing + 1

    # -- dumps --------------------------------------------------------------------------------------

    def begin_dump(self) -> None:
        self._previous, self.last = self.last, {}

    def observe(self, keys: list[bytes], cnts: list[bytes]) -> None:
        """Dump entries: ``keys[i]`` with counters ``cnts[i]``; the hot path.

        The same as ``observe_each`` on the pairs, with the per-entry work done by C loops: every
        baseline is taken out of the previous dump's map at once, the flows seen before go into this
        dump's map at once, and only entries whose counters changed (new flows among them) are handled
        one by one, in order. The order of the other entries cannot matter: moving a flow seen before
        from the previous map to this one leaves both the sum of their sizes (the ``max_flows`` check)
        and what a first sighting looks up unchanged, and its key is never the key of a first sighting
        before it (the first occurrence of a key takes its baseline). While keys without creation times
        may be matched (``adopt_legacy_keys``), a first sighting looks into both maps for another key:
        then it is ``observe_each``.
        """
        if self._legacy_dumps:
            self.observe_each(list(zip(keys, cnts, strict=True)))
            return
        prevs = list(map(self._previous.pop, keys, repeat(None)))  # type: ignore[union-attr]
        if all(prevs):  # counters blobs are never empty: no first sighting
            self.last.update(zip(keys, cnts, strict=True))
        else:
            self.last.update(zip(compress(keys, prevs), compress(cnts, prevs), strict=True))
        add = self._add
        for i in compress(range(len(keys)), map(ne, prevs, cnts)):
            prev = prevs[i]
            if prev is None:
                self._first_sighting(keys[i], cnts[i])
            else:
                add(keys[i], prev, cnts[i])

    def observe_each(self, items: list[tuple[bytes, bytes]]) -> None:
        """Dump entries ``(key, counters)``, one by one (the reference for ``observe``)."""
        pop, last, add = self._previous.pop, self.last, self._add  # type: ignore[union-attr]
        for key, cnt in items:
            prev = pop(key, None)
            if prev is None:
                self._first_sighting(key, cnt)
            elif prev != cnt:
                last[key] = cnt
                add(key, prev, cnt)
            else:
                last[key] = cnt

    def _first_sighting(self, key: bytes, cnt: bytes) -> None:
        if key in self.last:  # twice in one dump: the kernel never does this; never count it twice
            self.stats["duplicate_sightings"] += 1
            return
        prev = self._reappeared(key)
        if prev is None and self._legacy_dumps:
            prev = self._legacy_baseline(key)
        if prev is None:
            if self._is_destroyed(key):
                self.stats["stale_sightings"] += 1
                return
            if len(self.last) + len(self._previous or ()) >= self.max_flows:
                self.stats["untracked_sightings"] += 1
                return
            prev = ZERO_COUNTERS
        self.last[key] = cnt
        if prev != cnt:
            self._add(key, prev, cnt)

    def end_dump(self, *, consistent: bool = True) -> None:
        """Finish a dump: flows it did not contain become missing (unless the dump was inconsistent)."""
        # a copy: the previous dump's map keeps the table sized for every flow it held (a dict never
        # shrinks), and up to ``keep_missing`` of them would be kept as missing generations
        absent, self._previous = dict(self._previous or {}), None
        if self._legacy_dumps:
            self._legacy_dumps -= 1
        if not consistent:
            self.last.update(absent)
            return
        self.missing.appendleft(absent)
        while len(self.missing) > self.keep_missing:
            self.stats["expired_without_event"] += len(self.missing.pop())
        self.destroyed.appendleft(set())
        while len(self.destroyed) > self.keep_missing + 1:
            self.destroyed.pop()

    def _reappeared(self, key: bytes) -> bytes | None:
        for generation in self.missing:
            prev = generation.pop(key, None)
            if prev is not None:
                return prev
        return None

    def _legacy_baseline(self, key: bytes) -> bytes | None:
        """The baseline saved for ``key`` before keys carried the creation time, if any (taken)."""
        legacy = key[:-INSTANCE] + NO_START + key[-4:]
        if legacy == key:
            return None
        prev = self._previous.pop(legacy, None) if self._previous is not None else None
        if prev is None:
            prev = self.last.pop(legacy, None)
        if prev is None:
            prev = self._reappeared(legacy)
        if prev is not None:
            self.stats["legacy_baselines"] += 1
        return prev

    def _is_destroyed(self, key: bytes) -> bool:
        return any(key in generation for generation in self.destroyed)

    # -- events -------------------------------------------------------------------------------------

    def destroy(self, item: tuple[bytes, bytes]) -> None:
        """A DESTROY event ``(key, final counters)``."""
        key, cnt = item
        if self._is_destroyed(key):
            self.stats["duplicate_events"] += 1
            return
        prev = self.last.pop(key, None)
        if prev is None and self._previous is not None:
            prev = self._previous.pop(key, None)
        if prev is None:
            prev = self._reappeared(key)
        if prev is None and self._legacy_dumps:
            prev = self._legacy_baseline(key)
        if prev is None:
            self.stats["unseen_destroyed"] += 1
            prev = ZERO_COUNTERS
        self.destroyed[0].add(key)
        if prev != cnt:
            self._add(key, prev, cnt)

    # -- deltas -------------------------------------------------------------------------------------

    def _add(self, key: bytes, prev: bytes, cnt: bytes) -> None:
        c0, c1, c2, c3 = COUNTERS.unpack(cnt)
        p0, p1, p2, p3 = COUNTERS.unpack(prev)
        if c0 < p0 or c1 < p1 or c2 < p2 or c3 < p3:
            self.stats["counter_resets"] += 1
            d = pack(*(c if c < p else c - p for c, p in ((c0, p0), (c1, p1), (c2, p2), (c3, p3))))
        else:
            d = pack(c0 - p0, c1 - p1, c2 - p2, c3 - p3)
        deltas = self.deltas
        deltas[key] = deltas.get(key, 0) + d

    def take(self) -> dict[bytes, int]:
        """The open interval's deltas; the table starts a new interval (baselines are kept)."""
        taken, self.deltas = self.deltas, {}
        return taken

    def restore(self, *, deltas: dict[bytes, int]) -> None:
        """Put deltas back into the open interval (a report that could not be made)."""
        for key, value in deltas.items():
            self.deltas[key] = self.deltas.get(key, 0) + value

    @property
    def tracked(self) -> int:
        return len(self.last) + sum(len(g) for g in self.missing)


def fold(deltas: dict[bytes, int]) -> dict[bytes, int]:
    """Per-flow deltas folded per row key (zone, proto, tuples: the instance suffix dropped)."""
    rows: dict[bytes, int] = {}
    for key, value in deltas.items():
        row = key[:-INSTANCE]
        rows[row] = rows.get(row, 0) + value
    return rows


def _loopback(addr: bytes) -> bool:
    if len(addr) == 4:
        return addr[0] == 127
    return addr == b"\0" * 15 + b"\1" or (addr[:12] == b"\0" * 10 + b"\xff\xff" and addr[12] == 127)


def report(
    deltas: dict[bytes, int], *, protocols: frozenset[int] = REPORTED_PROTOCOLS
) -> tuple[list[RawRow], Counter[str]]:
    """Rows of one report, sorted by row key, and the records dropped, by reason."""
    rows: list[RawRow] = []
    dropped: Counter[str] = Counter()
    for row, value in sorted(fold(deltas).items()):
        if not value:
            dropped["no_delta"] += 1
            continue
        f = decode_key(row + bytes(INSTANCE))
        if f.proto not in protocols:
            dropped["protocol"] += 1
            continue
        if _loopback(f.orig_src) or _loopback(f.orig_dst) or _loopback(f.reply_src) or _loopback(f.reply_dst):
            dropped["loopback"] += 1
            continue
        rows.append(RawRow._make((*f[:FLOW_FIELDS], *unpack(value))))  # the key's flow tuple, then deltas
    return rows, dropped
