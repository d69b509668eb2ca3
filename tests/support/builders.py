"""Kubernetes objects (``kubenetmon.cli.lab.objects``, shared with the benchmarks), RAW rows and messages."""

from __future__ import annotations

import ipaddress

from kubenetmon.cli.lab.objects import T0, node, pod, rfc3339, service
from kubenetmon.shared.schema import AF_INET, AF_INET6, RawMessage, RawRow

__all__ = ["T0", "message", "node", "pod", "raw_row", "rfc3339", "service"]


def raw_row(
    proto: int | str,
    orig: tuple[str, int, str, int],
    reply: tuple[str, int, str, int],
    *,
    orig_counters: tuple[int, int] = (10, 11),
    reply_counters: tuple[int, int] = (12, 13),
    zone: int = 0,
) -> RawRow:
    """``orig``/``reply`` are (src, sport, dst, dport); counters are (packets, bytes)."""
    number = {"tcp": 6, "udp": 17, "sctp": 132}[proto.lower()] if isinstance(proto, str) else proto
    addrs = [ipaddress.ip_address(a) for a in (orig[0], orig[2], reply[0], reply[2])]
    family = AF_INET if addrs[0].version == 4 else AF_INET6
    osrc, odst, rsrc, rdst = (a.packed for a in addrs)
    return RawRow(
        number,
        family,
        zone,
        osrc,
        odst,
        orig[1],
        orig[3],
        rsrc,
        rdst,
        reply[1],
        reply[3],
        *orig_counters,
        *reply_counters,
    )


def message(
    rows: list[RawRow], *, node: str = "n1", start: int = T0, seconds: int = 60, seq: int = 0
) -> RawMessage:
    return RawMessage(
        node=node, boot="boot-1", start=start, seconds=seconds, seq=seq, chunk=0, chunks=1, rows=rows
    )
