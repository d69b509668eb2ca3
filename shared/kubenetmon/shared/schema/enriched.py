"""The ENRICHED contract (enricher -> writer): the ClickHouse row's columns, the message, its codec.

An ENRICHED message is column-oriented: ``cols`` names columns of ``COLUMNS`` and ``data`` holds one
entry per name. Two layouts, told apart by the major version ``v``:

- v2 (written): ``dict``, ``seqs`` and runs per column (``layout``): each distinct run of values once
  (constants, a record's labels shared by its ``out`` and ``in`` rows), maps through a dictionary.
  Adding a column is one ``Column`` line below: the layout follows its wire type.
- v1 (still read, and written on request): one plain array per column; ``encode_enriched`` writes
  exactly what ``msgpack.packb`` writes for that map, packing each repeated part of a ``spans.Spans``
  column once.

``decode_enriched`` reads both into plain lists and checks every column against its domain
(``domains``): whole columns for v1, each distinct sequence once for v2, value by value only to name
the culprit of a bad column.

This module must stay free of I/O and of any service's imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgpack

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import ReportRow, decode_report, report_map
from kubenetmon.shared.schema import envelope, layout
from kubenetmon.shared.schema.domains import U16, UINT32, UINT64, Binary, Domain, Flags, Ints, OneOf, Typed
from kubenetmon.shared.schema.identity import enriched_msg_id
from kubenetmon.shared.schema.limits import (
    ENRICHED_VERSION,
    ENRICHED_VERSIONS,
    MAX_INTERVAL_SECONDS,
    MAX_MESSAGE_BYTES,
)
from kubenetmon.shared.spans import array_header, pack_columns


@dataclass(frozen=True, slots=True)
class EnrichedMessage:
    """Rows ready for ClickHouse, column-oriented (``data[i]`` is the column ``columns[i]``)."""

    source: str
    """The ``Nats-Msg-Id`` of the RAW message these rows came from."""
    node: str
    enriched_at: int
    """Enrichment time in Unix nanoseconds: the row version (a replay's newer rows win)."""
    columns: list[str]
    data: Sequence[Sequence[Any]]
    """Lists once decoded; the enricher hands ``spans.Spans`` columns to ``encode_enriched``."""
    report: ReportRow | None = None
    """The RAW chunk's ledger row (``agent_reports``): on the first ENRICHED part of a RAW chunk only."""

    @property
    def msg_id(self) -> str:
        return enriched_msg_id(self.source)

    @property
    def row_count(self) -> int:
        return len(self.data[0]) if self.data else 0


# --------------------------------------------------------------------------------------------------
# ENRICHED columns: the ClickHouse row, in order. Names of kubenetmon's network_flows_0 are kept.
# Values on the wire are msgpack primitives; the writer converts nothing but what it must.


class Column(NamedTuple):
    name: str
    wire: str
    """Wire type: ``int``, ``str``, ``bool``, ``bytes16`` (IPv6 / v4-mapped address), ``map``."""
    doc: str


COLUMNS: Final[tuple[Column, ...]] = (
    Column("intervalStartTime", "int", "interval start, Unix seconds UTC"),
    Column("intervalSeconds", "int", "interval length, seconds"),
    Column("environment", "str", "configured environment"),
    Column("proto", "str", "TCP, UDP or SCTP"),
    Column("connectionClass", "str", "INTRA_VPC, INTRA_REGION, INTER_REGION, PUBLIC_INTERNET, UNKNOWN"),
    Column("connectionFlags", "map", "string -> bool flags (crossZone)"),
    Column("direction", "str", "out or in"),
    *(
        Column(f"{side}{name}", wire, f"{side} endpoint: {doc}")
        for side in ("local", "remote")
        for name, wire, doc in (
            ("Cloud", "str", "cloud (aws, gcp, azure, other)"),
            ("Region", "str", "region"),
            ("Cluster", "str", "cluster"),
            ("Cell", "str", "cell"),
            ("AvailabilityZone", "str", "availability zone of the pod's node"),
            ("Node", "str", "node name"),
            ("InstanceID", "str", "instance id from the node's providerID"),
            ("Namespace", "str", "pod namespace"),
            ("Pod", "str", "pod name"),
            ("IPv4", "int", "IPv4 address as an integer, 0 for IPv6"),
            ("Port", "int", "port"),
            ("App", "str", "app label or owning workload"),
        )
    ),
    Column("remoteCloudService", "str", "cloud service of the remote range"),
    Column("bytes", "int", "bytes in this direction over the interval"),
    Column("packets", "int", "packets in this direction over the interval"),
    # ours
    Column("observerNode", "str", "node whose agent saw the flow"),
    Column("ipFamily", "int", "4 or 6"),
    Column("localIP", "bytes16", "local address, IPv6 or IPv4-mapped"),
    Column("remoteIP", "bytes16", "remote address, IPv6 or IPv4-mapped"),
    Column("localWorkloadKind", "str", "Deployment, StatefulSet, DaemonSet, CronJob, Job, ..."),
    Column("localWorkload", "str", "owning workload name"),
    Column("remoteWorkloadKind", "str", "owning workload kind of the remote pod"),
    Column("remoteWorkload", "str", "owning workload name of the remote pod"),
    Column("localService", "str", "namespace/name of the Service the flow was addressed to, local side"),
    Column("remoteService", "str", "namespace/name of the Service the flow was addressed to, remote side"),
    Column("crossZone", "bool", "both zones known and different"),
    Column("flowId", "int", "row identity: hash of the RAW record (never of labels) and direction"),
    Column("enrichedAt", "int", "enrichment time, Unix nanoseconds; the row version"),
    Column("sourceId", "str", "Nats-Msg-Id of the RAW message"),
    Column(
        "remoteDNSName", "str", "DNS name the observer's node saw answered for a remote outside the cluster"
    ),
)
COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
NODE_COLUMNS: Final[tuple[Column, ...]] = (
    Column("localKind", "str", "'node': a row of the observer's own node's traffic (node table only)"),
)
"""Columns of node rows only, after ``COLUMNS``: a message without them holds pod rows."""
COLUMN_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(COLUMN_NAMES)}

_WIRE_DOMAIN: Final[dict[str, Domain]] = {
    "int": UINT64,
    "str": Typed(str),
    "bool": Typed(bool),
    "bytes16": Binary(16),
    "map": Flags(),
}
_NARROWER: Final[dict[str, Domain]] = {
    # columns narrower than their wire type: the ClickHouse column would not hold more
    "intervalStartTime": UINT32,  # a DateTime
    "intervalSeconds": Ints(1, MAX_INTERVAL_SECONDS),
    "localIPv4": UINT32,
    "remoteIPv4": UINT32,
    "localPort": U16,
    "remotePort": U16,
    "ipFamily": OneOf(int, frozenset({4, 6})),
    "localKind": OneOf(str, frozenset({"node"})),
}
DOMAINS: Final[dict[str, Domain]] = {
    c.name: _NARROWER.get(c.name, _WIRE_DOMAIN[c.wire]) for c in (*COLUMNS, *NODE_COLUMNS)
}
"""Each column's value domain: its wire type's, or a narrower one. The one statement of a column's rule."""
_COLUMN_WIRE: Final[dict[str, str]] = {c.name: c.wire for c in (*COLUMNS, *NODE_COLUMNS)}
_COLUMN_CHECK: Final[dict[str, Any]] = {name: domain.admits for name, domain in DOMAINS.items()}
CODED_WIRES: Final = frozenset({"map"})
"""Wire types whose values go through the v2 dictionary. Only maps (12 bytes a ``{"crossZone": ...}``,
two distinct values): coding strings and addresses as well made a message 40 % smaller, but cost the
enricher more CPU than the whole v1 encoding, and saved 5 % once the stream compresses its blocks
(S2 finds a repeated string as well as a dictionary does)."""
_CODED: Final[dict[str, bool]] = {c.name: c.wire in CODED_WIRES for c in (*COLUMNS, *NODE_COLUMNS)}


def _column_valid(name: str, wire: str, values: list[Any]) -> bool:
    """A whole non-empty column at once: ``_COLUMN_CHECK[name]`` of every value, in C where possible."""
    return DOMAINS[name].admits_all(values)


def encode_enriched(msg: EnrichedMessage, *, version: int = ENRICHED_VERSION) -> bytes:
    """The message in layout ``version`` (v2 unless asked); ``spans.Spans`` columns are packed by runs."""
    body: dict[str, Any] = {
        "v": version,
        "t": "enriched",
        "src": msg.source,
        "node": msg.node,
        "at": msg.enriched_at,
        "cols": msg.columns,
    }
    if msg.report is not None:
        body["report"] = report_map(msg.report)
    if version == 2:
        coded = [_CODED.get(name, False) for name in msg.columns[: len(msg.data)]]
        coded += [False] * (len(msg.data) - len(coded))  # a malformed message stays as malformed
        body["dict"], body["seqs"], body["data"] = layout.pack(msg.data, coded)
        return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]
    if version != 1:
        raise ValueError(f"no ENRICHED layout {version}")
    packer = msgpack.Packer(use_bin_type=True)
    body["data"] = ()  # last: the empty array (its last byte) is replaced by the columns
    head: bytes = packer.pack(body)
    pieces = [memoryview(head)[:-1], array_header(len(msg.data)), *pack_columns(msg.data, packer)]
    return b"".join(pieces)  # the one copy of the whole payload


def decode_enriched(
    data: bytes, *, subject: str = "", max_bytes: int = MAX_MESSAGE_BYTES, share: bool = False
) -> EnrichedMessage:
    """Decode and validate an ENRICHED message, column types included; problems raise ``DecodeError``.

    ``share``: for callers that only read the columns (the writer's batch), a v2 column that is one
    sequence of the message once is that sequence's list, not a copy; two columns may then be one list.

    Unknown columns are refused (``schema``): a newer enricher must bump the version or the writer
    must learn the column first. Missing columns are allowed only if the table has a default for them;
    that is the writer's decision, not the codec's.
    """
    obj = envelope.unpack(
        data, subject=subject, kind="enriched", version=ENRICHED_VERSIONS, max_bytes=max_bytes
    )
    kw: dict[str, Any] = {"subject": subject, "data": bytes(data)}
    source = envelope.field(obj, "src", str, **kw)
    node = envelope.field(obj, "node", str, **kw)
    at = envelope.field(obj, "at", int, **kw)
    cols = envelope.field(obj, "cols", list, **kw)
    cdata = envelope.field(obj, "data", list, **kw)
    if not source or at < 0:
        raise DecodeError("schema", "empty source or negative version", **kw)
    if len(cols) != len(cdata):
        raise DecodeError("schema", f"{len(cols)} column names for {len(cdata)} columns", **kw)
    if len(set(map(str, cols))) != len(cols):
        raise DecodeError("schema", "duplicate column names", **kw)
    if obj["v"] == 2:
        cdata = _unpack_v2(obj, cols, cdata, share=share, kw=kw)
    else:
        _check_columns(cols, cdata, kw=kw)
    report = obj.get("report")
    return EnrichedMessage(
        source=source,
        node=node,
        enriched_at=at,
        columns=cols,
        data=cdata,
        report=None if report is None else decode_report(report, **kw),
    )


def _check_columns(cols: list[Any], cdata: list[Any], *, kw: dict[str, Any]) -> None:
    """Every column is known, an array, as long as the others, and within its domain."""
    nrows = None
    for name, values in zip(cols, cdata, strict=True):
        wire = _COLUMN_WIRE.get(name) if type(name) is str else None
        if wire is None:
            raise DecodeError("schema", f"unknown column {name!r}", **kw)
        if type(values) is not list:
            raise DecodeError("schema", f"column {name!r} is not an array", **kw)
        if nrows is None:
            nrows = len(values)
        elif len(values) != nrows:
            raise DecodeError("schema", f"column {name!r} has {len(values)} values, expected {nrows}", **kw)
        domain = DOMAINS[name]
        if values and not domain.admits_all(values):
            value = next(v for v in values if not domain.admits(v))
            reason = "address" if wire == "bytes16" or name.endswith("IPv4") else "schema"
            raise DecodeError(reason, f"column {name!r}: bad value {value!r:.60}", **kw)


def _unpack_v2(
    obj: dict[str, Any], cols: list[Any], runs: list[Any], *, share: bool, kw: dict[str, Any]
) -> list[list[Any]]:
    """The plain columns of a v2 message, each distinct sequence checked once against its column's domain."""
    for name in cols:
        if type(name) is not str or name not in _COLUMN_WIRE:
            raise DecodeError("schema", f"unknown column {name!r}", **kw)
    try:
        columns = layout.unpack(
            obj.get("dict"),
            obj.get("seqs"),
            runs,
            [_CODED[name] for name in cols],
            max_cells=MAX_MESSAGE_BYTES,
        )
    except layout.LayoutError as exc:
        raise DecodeError("schema", str(exc), **kw) from None
    for name, column in zip(cols, columns, strict=True):
        domain = DOMAINS[name]
        for values, _ in column:
            if values and not domain.admits_all(values):
                value = next(v for v in values if not domain.admits(v))
                wire = _COLUMN_WIRE[name]
                reason = "address" if wire == "bytes16" or name.endswith("IPv4") else "schema"
                raise DecodeError(reason, f"column {name!r}: bad value {value!r:.60}", **kw)
    return [layout.expand(column, share=share) for column in columns]
