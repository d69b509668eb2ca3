"""Builders of ENRICHED messages with known rows, for the writer's tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kubenetmon.shared.schema import COLUMN_NAMES, COLUMNS, EnrichedMessage, RawRow, flow_id

_ZERO = {"int": 0, "str": "", "bool": False, "bytes16": bytes(16), "map": {}}
V4_MAPPED = bytes(10) + b"\xff\xff"


def interval_start(*, seconds: int = 60, ago: int = 120) -> int:
    """A recent interval start, and today's (so kubenetmon's "today, last 10 minutes" query sees it)."""
    now = int(time.time())
    start = now - ago - (now - ago) % seconds
    midnight = int(time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1)))
    return max(start, midnight)


_pinned: list[int] = []


def pin_interval() -> int:
    """Fix the interval start ``row`` gives from now on to a recent one (the writer's tests: per test)."""
    _pinned[:] = [interval_start()]
    return _pinned[0]


def pinned_interval() -> int:
    """The fixed interval start of ``row``: rows built at different moments keep one identity (a clock
    read per row would move them to the next interval across a minute boundary)."""
    return _pinned[0] if _pinned else pin_interval()


def row(
    source: str, index: int, *, direction: str = "out", start: int | None = None, **values: Any
) -> dict[str, Any]:
    """One full row: zero values, a realistic identity, and ``values`` on top; its interval is ``start``,
    else the pinned one (``pinned_interval``)."""
    raw = RawRow(
        6,
        2,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 1, index % 256]),
        40000 + index % 20000,
        443,
        bytes([10, 0, 1, index % 256]),
        bytes([10, 0, 0, 1]),
        443,
        40000 + index % 20000,
        1,
        100,
        1,
        50,
    )
    base = {c.name: _ZERO[c.wire] for c in COLUMNS}
    base.update(
        intervalStartTime=pinned_interval() if start is None else start,
        intervalSeconds=60,
        environment="test",
        proto="TCP",
        connectionClass="INTRA_VPC",
        direction=direction,
        localPod=f"pod-{index % 7}",
        remotePod=f"peer-{index % 5}",
        localApp="app",
        observerNode="node-a",
        ipFamily=4,
        localIP=V4_MAPPED + raw.orig_src,
        remoteIP=V4_MAPPED + raw.orig_dst,
        localIPv4=int.from_bytes(raw.orig_src, "big"),
        remoteIPv4=int.from_bytes(raw.orig_dst, "big"),
        localPort=raw.orig_sport,
        remotePort=raw.orig_dport,
        bytes=1000 + index,
        packets=10 + index % 3,
        flowId=flow_id(source, raw, direction),
        enrichedAt=1,
        sourceId=source,
    )
    base.update(values)
    return base


def message(
    source: str,
    rows: Sequence[dict[str, Any]],
    *,
    enriched_at: int = 1,
    columns: Sequence[str] = COLUMN_NAMES,
    node: str = "node-a",
) -> EnrichedMessage:
    """A message carrying ``rows`` (only ``columns`` of them, in that order)."""
    data = [[r[c] for r in rows] for c in columns]
    if "enrichedAt" in columns:
        data[list(columns).index("enrichedAt")] = [enriched_at] * len(rows)
    return EnrichedMessage(
        source=source, node=node, enriched_at=enriched_at, columns=list(columns), data=data
    )


def messages(
    count: int, rows_each: int, *, prefix: str = "node-a/boot/1/0", **values: Any
) -> list[EnrichedMessage]:
    """``count`` messages of ``rows_each`` rows; row i of message k has bytes 1000 + i."""
    out = []
    for k in range(count):
        source = f"{prefix}/{k}"
        out.append(message(source, [row(source, i, **values) for i in range(rows_each)]))
    return out


def total_bytes(msgs: Sequence[EnrichedMessage]) -> int:
    return sum(sum(m.data[m.columns.index("bytes")]) for m in msgs)
