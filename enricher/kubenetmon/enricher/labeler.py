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
from kubenetmon.enricher.objects import Node, Pod
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.shared import schema
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import RawMessage, RawRow

UDP: Final = 17
_MAPPED: Final = bytes(10) + b"\xff\xff"
KNOWN_MAX: Final = 200_000
"""Addresses whose resolution is remembered across messages (then forgotten all at once)."""
FLAGS: Final = {True: {"crossZone": True}, False: {"crossZone": False}}
"""Shared, never mutated: msgpack encodes each row's map from these two objects."""

DropHook = Callable[[int, RawRow, str], None]


Endpoint = tuple[Any, ...]
"""One address during one interval, a plain tuple for speed: (is a node's address, its pod or None,
its columns as the local side (``_SIDE_COLUMNS``), as the remote side (``_SIDE_COLUMNS`` + class,
cloud service, known pod), ip family, IPv4 as an integer (0 for IPv6), 16-byte address)."""


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
        self._known: dict[bytes, tuple[Pod | None, Node | None, PrefixTable[Remote], Endpoint]] = {}
        private = self.remotes.lookup(b"\x0a\x00\x00\x01")
        if private is None or private.cls != INTRA_VPC:
            raise ConfigError("the range table was built without the private ranges (use settings.private)")

    def set_ranges(self, ranges: PrefixTable[Range]) -> None:
        """Swap in a refreshed range table (atomic: one attribute assignment)."""
        self.remotes = remote_table(ranges, self.settings)

    def label(self, msg: RawMessage, *, enriched_at: int, on_drop: DropHook | None = None) -> Labelled:
        """Two rows per kept record (all ``out`` rows, then all ``in`` rows), in ``COLUMN_NAMES`` order.

        One loop over the records, deliberately inlined: it is the enricher's per-record cost.
        Everything about an address (node or not, its pod, both side tuples, its class) is resolved
        once per message (one interval) by ``_endpoint`` and reused by every record that has it.
        """
        index = self.index
        stats = Stats(records=len(msg.rows))
        services, node_ips, node_ports = index.services, index.node_ips, index.node_ports
        observer, ignore_udp, names = msg.node, self.settings.ignore_udp, schema.PROTO_NAMES
        pair = FlowIds(msg.msg_id).pair
        ambiguous_before = index.ambiguous
        endpoints: dict[bytes, Endpoint] = {}
        start, end, resolve = msg.start, msg.start + msg.seconds, self._endpoint
        local_cols: list[tuple[Any, ...]] = []
        remote_cols: list[tuple[Any, ...]] = []
        per_row: list[tuple[Any, ...]] = []
        for i, row in enumerate(msg.rows):
            proto, family, zone, osrc, odst, osp, odp, rsrc, rdst, rsp, rdp, opk, oby, rpk, rby = row
            name = names.get(proto)
            reason = ""
            if name is None:
                reason = "proto"
            elif proto == UDP and ignore_udp:
                reason = "udp"
            else:
                src = endpoints.get(osrc) or endpoints.setdefault(osrc, resolve(osrc, start, end))
                dst = endpoints.get(rsrc) or endpoints.setdefault(rsrc, resolve(rsrc, start, end))
                spod, dpod = src[1], dst[1]
                if src[0] or dst[0]:
                    reason = "node"
                elif spod is not None and spod.node == observer:
                    outgoing = True
                elif dpod is not None and dpod.node == observer:
                    outgoing = False
                elif spod is None and dpod is not None and dpod.node:
                    outgoing = True
                elif dpod is None and spod is not None and spod.node:
                    outgoing = False
                else:
                    reason = "direction"
            if reason:
                stats.dropped[reason] += 1
                if on_drop is not None:
                    on_drop(i, row, reason)
                continue
            service = services.get(odst, "")
            if not service and odst in node_ips:
                service = node_ports.get(odp, "")
            ids = pair(proto, family, zone, osrc, odst, osp, odp, rsrc, rdst, rsp, rdp)
            if outgoing:
                loc, rem = src[2], dst[3]
                per_row.append(
                    (name, osp, rsp, src[4], src[5], dst[5], src[6], dst[6],
                     bool(loc[4] and rem[4] and loc[4] != rem[4]), "", service, oby, opk, rby, rpk, *ids)
                )  # fmt: skip
            else:
                loc, rem = dst[2], src[3]
                per_row.append(
                    (name, rsp, osp, dst[4], dst[5], src[5], dst[6], src[6],
                     bool(loc[4] and rem[4] and loc[4] != rem[4]), service, "", rby, rpk, oby, opk, *ids)
                )  # fmt: skip
            local_cols.append(loc)
            remote_cols.append(rem)
        if index.ambiguous != ambiguous_before:
            stats.unknown["ambiguous"] += index.ambiguous - ambiguous_before
        self._count_unknown(stats, local_cols, remote_cols)
        columns = self._columns(msg, enriched_at, local_cols, remote_cols, per_row)
        stats.rows = 2 * len(per_row)
        return Labelled(
            columns=list(schema.COLUMN_NAMES), data=[columns[c] for c in schema.COLUMN_NAMES], stats=stats
        )

    def _endpoint(self, ip: bytes, start: int, end: int) -> Endpoint:
        """Everything the labeler needs about one address during ``[start, end)``.

        Memoised across messages: an entry is reused only while the same pod object, node object and
        range table produce it (the index replaces objects on every change), so it is never stale.
        """
        index = self.index
        if ip in index.node_ips:
            return (True, None, (), (), *_address(ip))
        pod = index.pod_at(ip, start, end)
        node = index.nodes.get(pod.node) if pod is not None else None
        remotes = self.remotes
        known = self._known.get(ip)
        if known is not None and known[0] is pod and known[1] is node and known[2] is remotes:
            return known[3]
        remote = remotes.lookup(ip)
        assert remote is not None  # remote_table maps "no match" to a value too
        tail = (remote.cls, remote.service, pod is not None)
        endpoint: Endpoint
        if pod is None:
            endpoint = (False, None, self._unknown_local, (*remote.fields, "", "", "", *tail), *_address(ip))
        else:
            side = self._pod_fields(pod)
            endpoint = (False, pod, side, (remote.cloud, remote.region, *side[2:], *tail), *_address(ip))
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known[ip] = (pod, node, remotes, endpoint)
        return endpoint

    @staticmethod
    def _count_unknown(
        stats: Stats, local_cols: list[tuple[Any, ...]], remote_cols: list[tuple[Any, ...]]
    ) -> None:
        if not remote_cols:
            return
        counts = {
            "local": sum(1 for side in local_cols if not side[_POD]),
            "remote": sum(1 for side in remote_cols if not side[_R_KNOWN]),
            "class": sum(1 for side in remote_cols if side[_R_CLASS] == UNKNOWN),
        }
        for reason, n in counts.items():
            if n:
                stats.unknown[reason] += n

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


def _address(ip: bytes) -> tuple[int, int, bytes]:
    """ipFamily, IPv4 as an integer (0 for IPv6), the 16-byte (IPv4-mapped) address."""
    if len(ip) == 4:
        return 4, int.from_bytes(ip, "big"), _MAPPED + ip
    return 6, 0, ip


class FlowIds:
    """``schema.flow_id`` for both directions of a row, sharing the hash of the common prefix.

    Same bytes hashed in the same order as ``schema.flow_id`` (blake2b is a streaming hash), so the
    values are identical; a test checks it on random rows of both families.
    """

    __slots__ = ("_base",)

    def __init__(self, msg_id: str) -> None:
        self._base = hashlib.blake2b(msg_id.encode(), digest_size=8)

    def pair(
        self, proto: int, family: int, zone: int, osrc: bytes, odst: bytes, osport: int, odport: int,
        rsrc: bytes, rdst: bytes, rsport: int, rdport: int,
    ) -> tuple[int, int]:  # fmt: skip
        """(flow id ``out``, flow id ``in``) of the row with these fields (``RawRow`` order)."""
        n = len(osrc)
        blob = (_PACK4 if n == 4 else _PACK16)(
            proto, family, zone, n, osrc, n, odst, n, rsrc, n, rdst, osport, odport, rsport, rdport
        )
        out = self._base.copy()
        out.update(blob)
        back = out.copy()
        out.update(b"out")
        back.update(b"in")
        return int.from_bytes(out.digest(), "big"), int.from_bytes(back.digest(), "big")

    def of(self, row: RawRow) -> tuple[int, int]:
        return self.pair(*row[:11])


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
_POD: Final = _SIDE_COLUMNS.index("Pod")
_R_CLASS: Final = len(_SIDE_COLUMNS)
_R_SERVICE: Final = _R_CLASS + 1
_R_KNOWN: Final = _R_CLASS + 2
