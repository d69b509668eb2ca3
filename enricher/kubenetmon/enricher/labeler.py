"""Label RAW flow records: drops, endpoints, local/remote and direction, attributes, connection class.

Why it exists: this is the labeling spec (drop rules, endpoints, the direction table, attributes,
connection classes, the two rows per flow) as one pure function of a RAW message, the metadata index
and the range table. The enricher workers and ``kubenetmon label`` both call ``Labeler.label``, so
the offline tool gives exactly what the pipeline writes.

Output is column-oriented in the order of ``schema.COLUMNS``: rows are built as tuples and
transposed once per message. Every drop and every unknown is counted by reason in ``Stats``.

It must not do I/O, read the clock except through ``enriched_at``, or mutate the index.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from kubenetmon.enricher.classes import INTRA_VPC, UNKNOWN, LabelSettings, Remote, remote_table
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.objects import Pod
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.shared import schema
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import RawMessage, RawRow

UDP: Final = 17
_MAPPED: Final = bytes(10) + b"\xff\xff"
FLAGS: Final = {True: {"crossZone": True}, False: {"crossZone": False}}
"""Shared, never mutated: msgpack encodes each row's map from these two objects."""

DropHook = Callable[[int, RawRow, str], None]


@dataclass(slots=True)
class Stats:
    """Counts for one ``label`` call (the caller adds them to its metrics)."""

    records: int = 0
    rows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Drop reason -> records: ``udp``, ``node``, ``direction``, ``proto``."""
    unknown: Counter[str] = field(default_factory=Counter)
    """``local``/``remote`` endpoint not a known pod, ``ambiguous`` IP, ``class`` (empty region)."""


@dataclass(slots=True)
class Labelled:
    columns: list[str]
    data: list[list[Any]]
    stats: Stats


class Labeler:
    """Labels RAW messages against an index and a cloud range table; settings are fixed."""

    def __init__(self, settings: LabelSettings, *, index: Index, ranges: PrefixTable[Range]) -> None:
        self.settings = settings
        self.index = index
        self.remotes: PrefixTable[Remote] = remote_table(ranges, settings)
        self._unknown_local = (settings.cloud, settings.region, settings.cluster, settings.cell) + ("",) * 8
        private = self.remotes.lookup(b"\x0a\x00\x00\x01")
        if private is None or private.cls != INTRA_VPC:
            raise ConfigError("the range table was built without the private ranges (use settings.private)")

    def set_ranges(self, ranges: PrefixTable[Range]) -> None:
        """Swap in a refreshed range table (atomic: one attribute assignment)."""
        self.remotes = remote_table(ranges, self.settings)

    def label(self, msg: RawMessage, *, enriched_at: int, on_drop: DropHook | None = None) -> Labelled:
        """Two rows per kept record (all ``out`` rows, then all ``in`` rows), in ``COLUMN_NAMES`` order.

        One loop over the records, deliberately inlined: it is the enricher's per-record cost. Pod
        lookups, side attributes and remote classes are memoised per message (one interval).
        """
        index = self.index
        stats = Stats(records=len(msg.rows))
        start, end = msg.start, msg.start + msg.seconds
        node_ips, services, pod_at, node_ports = (
            index.node_ips,
            index.services,
            index.pod_at,
            index.node_ports,
        )
        observer, ignore_udp, pair = msg.node, self.settings.ignore_udp, FlowIds(msg.msg_id).pair
        ambiguous_before = index.ambiguous
        pods: dict[bytes, Pod | None] = {}
        sides: dict[Pod, tuple[Any, ...]] = {}
        remotes: dict[bytes, tuple[Any, ...]] = {}
        local_cols: list[tuple[Any, ...]] = []
        remote_cols: list[tuple[Any, ...]] = []
        per_row: list[tuple[Any, ...]] = []
        unknown_local = 0
        for i, row in enumerate(msg.rows):
            proto, _, _, osrc, odst, osport, odport, rsrc, _, rsport, _, opk, oby, rpk, rby = row
            name = schema.PROTO_NAMES.get(proto)
            reason = ""
            if name is None:
                reason = "proto"
            elif proto == UDP and ignore_udp:
                reason = "udp"
            elif osrc in node_ips or rsrc in node_ips:
                reason = "node"
            else:
                src = pods[osrc] if osrc in pods else pods.setdefault(osrc, pod_at(osrc, start, end))
                dst = pods[rsrc] if rsrc in pods else pods.setdefault(rsrc, pod_at(rsrc, start, end))
                if src is not None and src.node == observer:
                    outgoing = True
                elif dst is not None and dst.node == observer:
                    outgoing = False
                elif src is None and dst is not None and dst.node:
                    outgoing = True
                elif dst is None and src is not None and src.node:
                    outgoing = False
                else:
                    reason = "direction"
            if reason:
                stats.dropped[reason] += 1
                if on_drop is not None:
                    on_drop(i, row, reason)
                continue
            if outgoing:
                lpod, lip, lport, rpod, rip, rport = src, osrc, osport, dst, rsrc, rsport
            else:
                lpod, lip, lport, rpod, rip, rport = dst, rsrc, rsport, src, osrc, osport
            if lpod is None:
                loc = self._unknown_local
                unknown_local += 1
            else:
                loc = sides.get(lpod) or sides.setdefault(lpod, self._pod_fields(lpod))
            rem = remotes.get(rip) or remotes.setdefault(rip, self._remote(rip, rpod))
            service = services.get(odst, "")
            if not service and odst in node_ips:
                service = node_ports.get(odport, "")
            local_cols.append(loc)
            remote_cols.append(rem)
            ids = pair(row)
            if len(lip) == 4:
                family, lip4, rip4, lip16, rip16 = (
                    4,
                    int.from_bytes(lip),
                    int.from_bytes(rip),
                    _MAPPED + lip,
                    _MAPPED + rip,
                )
            else:
                family, lip4, rip4, lip16, rip16 = 6, 0, 0, lip, rip
            zone, rzone = loc[4], rem[4]
            per_row.append(
                (name, lport, rport, family, lip4, rip4, lip16, rip16, bool(zone and rzone and zone != rzone))
                + (("", service, oby, opk, rby, rpk) if outgoing else (service, "", rby, rpk, oby, opk))
                + ids
            )
        if index.ambiguous != ambiguous_before:
            stats.unknown["ambiguous"] += index.ambiguous - ambiguous_before
        self._count_unknown(stats, unknown_local, remote_cols)
        columns = self._columns(msg, enriched_at, local_cols, remote_cols, per_row)
        stats.rows = 2 * len(per_row)
        return Labelled(
            columns=list(schema.COLUMN_NAMES), data=[columns[c] for c in schema.COLUMN_NAMES], stats=stats
        )

    @staticmethod
    def _count_unknown(stats: Stats, unknown_local: int, remote_cols: list[tuple[Any, ...]]) -> None:
        if unknown_local:
            stats.unknown["local"] += unknown_local
        if remote_cols:
            remote = sum(1 for r in remote_cols if not r[_R_KNOWN])
            klass = sum(1 for r in remote_cols if r[_R_CLASS] == UNKNOWN)
            if remote:
                stats.unknown["remote"] += remote
            if klass:
                stats.unknown["class"] += klass

    def _columns(
        self,
        msg: RawMessage,
        enriched_at: int,
        local_cols: list[tuple[Any, ...]],
        remote_cols: list[tuple[Any, ...]],
        per_row: list[tuple[Any, ...]],
    ) -> dict[str, list[Any]]:
        """Transpose once (C speed); each record's ``out`` and ``in`` rows share all but four columns."""
        n = len(per_row)
        if n == 0:
            return {c: [] for c in schema.COLUMN_NAMES}
        loc = list(zip(*local_cols, strict=True))
        rem = list(zip(*remote_cols, strict=True))
        row = list(zip(*per_row, strict=True))
        s = self.settings
        cols: dict[str, list[Any]] = {
            "intervalStartTime": [msg.start] * 2 * n,
            "intervalSeconds": [msg.seconds] * 2 * n,
            "environment": [s.environment] * 2 * n,
            "direction": ["out"] * n + ["in"] * n,
            "observerNode": [msg.node] * 2 * n,
            "enrichedAt": [enriched_at] * 2 * n,
            "sourceId": [msg.msg_id] * 2 * n,
            "connectionFlags": [FLAGS[c] for c in row[8]] * 2,
            "bytes": [*row[11], *row[13]],
            "packets": [*row[12], *row[14]],
            "flowId": [*row[15], *row[16]],
            "connectionClass": [*rem[_R_CLASS], *rem[_R_CLASS]],
            "remoteCloudService": [*rem[_R_SERVICE], *rem[_R_SERVICE]],
        }
        for j, name in enumerate(_ROW_COLUMNS):
            cols[name] = [*row[j], *row[j]]
        for j, name in enumerate(_SIDE_COLUMNS):
            cols["local" + name] = [*loc[j], *loc[j]]
            cols["remote" + name] = [*rem[j], *rem[j]]
        return cols

    def _pod_fields(self, pod: Pod) -> tuple[Any, ...]:
        """A pod's side columns, in ``_SIDE_COLUMNS`` order."""
        s = self.settings
        node = self.index.nodes.get(pod.node)
        zone, instance = (node.zone, node.instance_id) if node is not None else ("", "")
        return (
            s.cloud, s.region, s.cluster, s.cell, zone, pod.node, instance, pod.namespace, pod.name,
            pod.app, pod.workload_kind, pod.workload,
        )  # fmt: skip

    def _remote(self, ip: bytes, pod: Pod | None) -> tuple[Any, ...]:
        """The remote side: ``_SIDE_COLUMNS``, then class, cloud service and whether it is a known pod."""
        remote = self.remotes.lookup(ip)
        assert remote is not None  # remote_table maps "no match" to a value too
        tail = (remote.cls, remote.service, pod is not None)
        if pod is None:
            return (*remote.fields, "", "", "", *tail)
        return (remote.cloud, remote.region, *self._pod_fields(pod)[2:], *tail)


class FlowIds:
    """``schema.flow_id`` for both directions of a row, sharing the hash of the common prefix.

    Same bytes hashed in the same order as ``schema.flow_id`` (blake2b is a streaming hash), so the
    values are identical; a test checks it on random rows of both families.
    """

    __slots__ = ("_base",)

    def __init__(self, msg_id: str) -> None:
        self._base = hashlib.blake2b(msg_id.encode(), digest_size=8)

    def pair(self, row: RawRow) -> tuple[int, int]:
        n = len(row.orig_src)
        blob = (_PACK4 if n == 4 else _PACK16)(
            row.proto, row.family, row.zone, n, row.orig_src, n, row.orig_dst, n, row.reply_src, n,
            row.reply_dst, row.orig_sport, row.orig_dport, row.reply_sport, row.reply_dport,
        )  # fmt: skip
        out = self._base.copy()
        out.update(blob)
        back = out.copy()
        out.update(b"out")
        back.update(b"in")
        return int.from_bytes(out.digest(), "big"), int.from_bytes(back.digest(), "big")


_PACK4: Final = struct.Struct("!BBHB4sB4sB4sB4sHHHH").pack
_PACK16: Final = struct.Struct("!BBHB16sB16sB16sB16sHHHH").pack
# per_row layout: the columns below, then localService, remoteService, out bytes, out packets,
# in bytes, in packets, flow id out, flow id in.
_ROW_COLUMNS: Final = (
    "proto", "localPort", "remotePort", "ipFamily", "localIPv4", "remoteIPv4", "localIP", "remoteIP",
    "crossZone", "localService", "remoteService",
)  # fmt: skip
_SIDE_COLUMNS: Final = (
    "Cloud", "Region", "Cluster", "Cell", "AvailabilityZone", "Node", "InstanceID", "Namespace", "Pod",
    "App", "WorkloadKind", "Workload",
)  # fmt: skip
__all__ = ["UNKNOWN", "LabelSettings", "Labeler", "Labelled", "Stats"]
_R_CLASS: Final = len(_SIDE_COLUMNS)
_R_SERVICE: Final = _R_CLASS + 1
_R_KNOWN: Final = _R_CLASS + 2
