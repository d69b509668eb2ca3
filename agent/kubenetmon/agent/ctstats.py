"""Conntrack's own statistics: what the kernel could not track, read over ctnetlink each poll.

The agent meters what conntrack tracked; a packet conntrack refused (``invalid``), a connection it could
not insert (``insert_failed``, ``drop``: the table was full, ``early_drop``: an unassured entry evicted
to make room) never reaches a dump or an event. These counters are the only trace of them, so they are
read with every poll (``IPCTNL_MSG_CT_GET_STATS_CPU``: one message per CPU; ``IPCTNL_MSG_CT_GET_STATS``:
the namespace's entry count and the global ``nf_conntrack_max``), summed over CPUs and exported.

The per-CPU counters are the network namespace's and only grow while it lives; a counter that goes
backwards (a namespace re-created, a CPU taken offline) restarts the delta from the new value.
Pure: request encoding and message decoding, no I/O (the conntrack module sends and receives).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, fields
from typing import Final

from kubenetmon.agent.ctnetlink import NLMSG_DONE, NLMSG_ERROR, attrs

CT_GET_STATS_CPU: Final = 0x104  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS_CPU
CT_GET_STATS: Final = 0x105  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
_NLMSG: Final = struct.Struct("=IHHII")
_NFGEN: Final = struct.Struct("=BBH")
_HEAD: Final = _NLMSG.size + _NFGEN.size

CPU_ATTRS: Final = {
    2: "found",
    4: "invalid",
    9: "insert_failed",
    10: "drop",
    11: "early_drop",
    12: "error",
    13: "search_restart",
    14: "clash_resolve",
    15: "chaintoolong",
}
"""``CTA_STATS_*`` attribute type -> counter name (``enum ctattr_stats_cpu``; all be32)."""
GLOBAL_ENTRIES, GLOBAL_MAX_ENTRIES = 1, 2
TABLE_DROPS: Final = ("insert_failed", "drop", "early_drop")
"""Counters whose growth means connections the table refused: their traffic is not metered."""


@dataclass(frozen=True, slots=True)
class Stats:
    """The namespace's conntrack counters summed over CPUs, plus its entry count and the table limit."""

    found: int = 0
    invalid: int = 0
    insert_failed: int = 0
    drop: int = 0
    early_drop: int = 0
    error: int = 0
    search_restart: int = 0
    clash_resolve: int = 0
    chaintoolong: int = 0
    entries: int = 0
    """Entries in the namespace's table now (a gauge, not a counter)."""
    max_entries: int = 0
    """``nf_conntrack_max`` (global to the host); 0 if the kernel does not say."""

    @property
    def table_drops(self) -> int:
        return self.insert_failed + self.drop + self.early_drop

    @property
    def fill(self) -> float:
        """Fraction of ``nf_conntrack_max`` in use by this namespace (0 when unknown)."""
        return self.entries / self.max_entries if self.max_entries else 0.0


COUNTERS: Final = tuple(f.name for f in fields(Stats) if f.name not in ("entries", "max_entries"))


def request(kind: int, *, seq: int) -> bytes:
    """A stats request: ``CT_GET_STATS_CPU`` is a dump (one reply per CPU), ``CT_GET_STATS`` is not."""
    flags = NLM_F_REQUEST | (NLM_F_DUMP if kind == CT_GET_STATS_CPU else 0)
    return _NLMSG.pack(_HEAD, kind, flags, seq, 0) + _NFGEN.pack(socket.AF_UNSPEC, 0, 0)


def decode(buf: bytes, totals: dict[str, int]) -> bool:
    """Add the counters of every stats message in ``buf`` to ``totals``; True once the reply is complete.

    ``totals`` takes ``CPU_ATTRS`` names plus ``entries`` and ``max_entries``. A netlink error raises
    ``OSError``; anything malformed raises ``ValueError``.
    """
    off, done = 0, False
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size or off + length > len(buf):
            raise ValueError(f"malformed netlink message (length {length}) at {off}")
        if kind == NLMSG_ERROR:
            code = -int.from_bytes(buf[off + 16 : off + 20], "little", signed=True)
            if code:
                raise OSError(code, f"ctnetlink stats: {os.strerror(code)}")
            done = True
        elif kind == NLMSG_DONE:
            done = True
        elif kind == CT_GET_STATS_CPU:
            _add(buf, off + _HEAD, off + length, totals, names=CPU_ATTRS)
        elif kind == CT_GET_STATS:
            _add(buf, off + _HEAD, off + length, totals, names={1: "entries", 2: "max_entries"})
            done = True  # not a dump: one message is the whole reply
        off += (length + 3) & ~3
    return done


def _add(buf: bytes, start: int, end: int, totals: dict[str, int], *, names: dict[int, str]) -> None:
    for kind, _hoff, voff, vlen in attrs(buf, start, end):
        name = names.get(kind)
        if name is not None and vlen == 4:
            totals[name] = totals.get(name, 0) + int.from_bytes(buf[voff : voff + 4], "big")


def stats_of(totals: dict[str, int]) -> Stats:
    return Stats(**{f.name: totals.get(f.name, 0) for f in fields(Stats)})


def growth(before: Stats | None, after: Stats) -> dict[str, int]:
    """How much each counter grew from ``before`` to ``after`` (a counter that went back: its new value)."""
    if before is None:
        return dict.fromkeys(COUNTERS, 0)
    out = {}
    for name in COUNTERS:
        old, new = getattr(before, name), getattr(after, name)
        out[name] = new - old if new >= old else new
    return out
