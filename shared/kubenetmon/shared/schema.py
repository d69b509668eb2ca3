"""Wire contracts between the stages: RAW (agent -> enricher) and ENRICHED (enricher -> writer).

Both are msgpack maps with a major version ``v``. Decoding is strict: anything that is not a
well-formed message of the expected kind and major version raises ``DecodeError`` and nothing else,
so a consumer can send it to the DLQ without ever crashing or blocking the stream.

This module must stay free of I/O and of any service's imports: it is the one place the stages agree.

RAW row layout (a msgpack array, in this order; see ``RawRow``)::

    proto, family, zone,
    orig_src, orig_dst, orig_sport, orig_dport,      # addresses: 4 or 16 raw bytes per family
    reply_src, reply_dst, reply_sport, reply_dport,
    orig_packets, orig_bytes, reply_packets, reply_bytes   # deltas for this interval

Within one RAW message an agent emits at most one row per (zone, proto, orig tuple, reply tuple):
that tuple plus the message's identity is the row identity in ClickHouse (``flow_id``).

Decoding validates whole columns at once (C-level passes over the transposed rows) and falls back to
the row-by-row checker only to name the culprit of a message already known to be invalid.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat, starmap
from typing import Any, Final, NamedTuple

import msgpack
from xxhash import xxh3_64_intdigest

from kubenetmon.shared.errors import DecodeError

RAW_VERSION: Final = 1
ENRICHED_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
"""Decoders refuse larger payloads outright (``oversized``) before unpacking anything."""

AF_INET: Final = 2
AF_INET6: Final = 10
ADDRESS_LENGTH: Final = {AF_INET: 4, AF_INET6: 16}
PROTO_NAMES: Final = {6: "TCP", 17: "UDP", 132: "SCTP"}

_U64: Final = (1 << 64) - 1
_U32: Final = (1 << 32) - 1


class RawRow(NamedTuple):
    """One flow's counter deltas over one interval, as seen by one observer node."""

    proto: int
    family: int
    zone: int
    orig_src: bytes
    orig_dst: bytes
    orig_sport: int
    orig_dport: int
    reply_src: bytes
    reply_dst: bytes
    reply_sport: int
    reply_dport: int
    orig_packets: int
    orig_bytes: int
    reply_packets: int
    reply_bytes: int


RAW_ROW_FIELDS: Final = len(RawRow._fields)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One chunk of one agent's report for one interval.

    ``seq`` is the agent's report sequence within this boot: a report for an interval that was
    already partly reported (e.g. after a graceful restart mid-interval) gets a new ``seq``, so its
    rows get a distinct identity instead of replacing the earlier ones.
    """

    node: str
    boot: str
    start: int
    """Interval start, Unix seconds (UTC), aligned to a multiple of ``seconds``."""
    seconds: int
    """Interval length in seconds."""
    seq: int
    chunk: int
    chunks: int
    rows: list[RawRow] = field(default_factory=list)
    _columns: list[tuple[Any, ...]] | None = field(default=None, init=False, repr=False, compare=False)
    """Set by ``decode_raw``, which transposes the rows anyway to validate them."""

    @property
    def msg_id(self) -> str:
        """Deterministic ``Nats-Msg-Id``: a retried publish is dropped by the duplicate window."""
        return raw_msg_id(self.node, self.boot, self.start, self.seq, self.chunk)

    def columns(self) -> list[tuple[Any, ...]]:
        """The rows transposed: ``columns()[i]`` holds field ``i`` (``RawRow`` order) of every row."""
        if self._columns is not None:
            return self._columns
        return list(zip(*self.rows, strict=True)) if self.rows else [()] * RAW_ROW_FIELDS


def raw_msg_id(node: str, boot: str, start: int, seq: int, chunk: int) -> str:
    return f"{node}/{boot}/{start}/{seq}/{chunk}"


@dataclass(frozen=True, slots=True)
class EnrichedMessage:
    """Rows ready for ClickHouse, column-oriented (``data[i]`` is the column ``columns[i]``)."""

    source: str
    """The ``Nats-Msg-Id`` of the RAW message these rows came from."""
    node: str
    enriched_at: int
    """Enrichment time in Unix nanoseconds: the row version (a replay's newer rows win)."""
    columns: list[str]
    data: list[list[Any]]

    @property
    def msg_id(self) -> str:
        return enriched_msg_id(self.source)

    @property
    def row_count(self) -> int:
        return len(self.data[0]) if self.data else 0


def enriched_msg_id(source: str, *, replay: str = "") -> str:
    """The ENRICHED id derived from the RAW id; a replay run adds its own tag so it never collides."""
    return f"enriched/{replay}/{source}" if replay else f"enriched/{source}"


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
)
COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
COLUMN_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(COLUMN_NAMES)}


_IDENTITY: Final = struct.Struct("!BBH16s16sHH16s16sHH")
"""A row's identity fields, proto to reply_dport; 4-byte addresses are zero-padded (family says which)."""
IN_FLIP: Final = 1
"""The ``in`` row's id is the ``out`` row's id with this bit flipped."""


def flow_ids(msg_id: str, columns: Sequence[Sequence[Any]]) -> list[int]:
    """The ``out`` row identity of every row given as columns (``RawMessage.columns``); see ``flow_id``."""
    seed = xxh3_64_intdigest(msg_id.encode())
    return list(map(xxh3_64_intdigest, starmap(_IDENTITY.pack, zip(*columns[:11])), repeat(seed)))


def flow_id(msg_id: str, row: RawRow, direction: str) -> int:
    """Row identity as an unsigned 64-bit integer, from the RAW record alone.

    Same RAW message + same row + same direction -> same id, whatever the labels and the counters;
    so a redelivered or replayed record replaces its row instead of adding to it. It is XXH3-64 of
    the row's flow fields seeded with XXH3-64 of the message id (stable across processes and
    platforms); the ``in`` id differs from the ``out`` id in the lowest bit.
    """
    if direction not in ("out", "in"):
        raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
    (out,) = flow_ids(msg_id, [(value,) for value in row[:11]])
    return out if direction == "out" else out ^ IN_FLIP


# --------------------------------------------------------------------------------------------------
# codec


def encode_raw(msg: RawMessage) -> bytes:
    """Encode a RAW message (no validation: the agent builds rows from kernel data)."""
    packed: bytes = msgpack.packb(
        {
            "v": RAW_VERSION,
            "t": "raw",
            "node": msg.node,
            "boot": msg.boot,
            "start": msg.start,
            "secs": msg.seconds,
            "seq": msg.seq,
            "chunk": msg.chunk,
            "chunks": msg.chunks,
            "rows": msg.rows,
        },
        use_bin_type=True,
    )
    return packed


def encode_enriched(msg: EnrichedMessage) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "v": ENRICHED_VERSION,
            "t": "enriched",
            "src": msg.source,
            "node": msg.node,
            "at": msg.enriched_at,
            "cols": msg.columns,
            "data": msg.data,
        },
        use_bin_type=True,
    )
    return packed


def _unpack(data: bytes, *, subject: str, kind: str, version: int, max_bytes: int) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("malformed", "payload is not bytes", subject=subject, data=b"")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} bytes > {max_bytes}", subject=subject, data=data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, UnicodeDecodeError...)
        raise DecodeError("malformed", f"not msgpack: {exc}", subject=subject, data=data) from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "top level is not a map", subject=subject, data=data)
    v = obj.get("v")
    if type(v) is not int:
        raise DecodeError("schema", "missing integer field 'v'", subject=subject, data=data)
    if v != version:
        raise DecodeError(
            "version", f"unsupported {kind} version {v} (want {version})", subject=subject, data=data
        )
    if obj.get("t") != kind:
        raise DecodeError("schema", f"not a {kind} message (t={obj.get('t')!r})", subject=subject, data=data)
    return obj


def _field(obj: dict[str, Any], name: str, typ: type, *, subject: str, data: bytes) -> Any:
    value = obj.get(name)
    if type(value) is not typ:
        raise DecodeError(
            "schema",
            f"field {name!r} must be {typ.__name__}, got {type(value).__name__}",
            subject=subject,
            data=data,
        )
    return value


def _check_row(row: Any, i: int, *, subject: str, data: bytes) -> RawRow:
    if not isinstance(row, list) or len(row) != RAW_ROW_FIELDS:
        raise DecodeError("schema", f"row {i}: not an array of {RAW_ROW_FIELDS}", subject=subject, data=data)
    proto, family, zone, osrc, odst, osp, odp, rsrc, rdst, rsp, rdp, opk, oby, rpk, rby = row
    for name, value, hi in (
        ("proto", proto, 255),
        ("family", family, 255),
        ("zone", zone, 0xFFFF),
        ("orig_sport", osp, 0xFFFF),
        ("orig_dport", odp, 0xFFFF),
        ("reply_sport", rsp, 0xFFFF),
        ("reply_dport", rdp, 0xFFFF),
        ("orig_packets", opk, _U64),
        ("orig_bytes", oby, _U64),
        ("reply_packets", rpk, _U64),
        ("reply_bytes", rby, _U64),
    ):
        if type(value) is not int or not 0 <= value <= hi:
            raise DecodeError("schema", f"row {i}: {name}={value!r} out of range", subject=subject, data=data)
    length = ADDRESS_LENGTH.get(family)
    if length is None:
        raise DecodeError("address", f"row {i}: unknown address family {family}", subject=subject, data=data)
    for name, value in (("orig_src", osrc), ("orig_dst", odst), ("reply_src", rsrc), ("reply_dst", rdst)):
        if type(value) is not bytes or len(value) != length:
            raise DecodeError(
                "address", f"row {i}: {name} is not a {length}-byte address", subject=subject, data=data
            )
    return RawRow(proto, family, zone, osrc, odst, osp, odp, rsrc, rdst, rsp, rdp, opk, oby, rpk, rby)


def decode_raw(data: bytes, *, subject: str = "", max_bytes: int = MAX_MESSAGE_BYTES) -> RawMessage:
    """Decode and validate a RAW message; any problem raises ``DecodeError``."""
    obj = _unpack(data, subject=subject, kind="raw", version=RAW_VERSION, max_bytes=max_bytes)
    kw: dict[str, Any] = {"subject": subject, "data": bytes(data)}
    node = _field(obj, "node", str, **kw)
    boot = _field(obj, "boot", str, **kw)
    if not node or not boot:
        raise DecodeError("schema", "empty node or boot id", **kw)
    ints = {name: _field(obj, name, int, **kw) for name in ("start", "secs", "seq", "chunk", "chunks")}
    if (
        not 0 <= ints["start"] <= _U32  # a ClickHouse DateTime
        or not 0 < ints["secs"] <= 0xFFFF
        or ints["seq"] < 0
        or not 0 <= ints["chunk"] < ints["chunks"]
    ):
        raise DecodeError("schema", f"inconsistent header {ints}", **kw)
    rows = _field(obj, "rows", list, **kw)
    columns = _columns_of(rows)
    if columns is None:  # invalid: the row-by-row checker names the culprit
        checked = [_check_row(row, i, **kw) for i, row in enumerate(rows)]
    else:
        checked = list(map(tuple.__new__, repeat(RawRow), rows))
    msg = RawMessage(
        node=node,
        boot=boot,
        start=ints["start"],
        seconds=ints["secs"],
        seq=ints["seq"],
        chunk=ints["chunk"],
        chunks=ints["chunks"],
        rows=checked,
    )
    if columns is not None:
        object.__setattr__(msg, "_columns", columns)
    return msg


_INT_FIELDS: Final = (
    (0, "B"), (1, "B"), (2, "H"), (5, "H"), (6, "H"), (9, "H"), (10, "H"),
    (11, "Q"), (12, "Q"), (13, "Q"), (14, "Q"),
)  # fmt: skip
"""Integer fields of a RAW row and the struct code whose range they must fit."""
_ADDRESS_FIELDS: Final = (3, 4, 7, 8)


def _columns_of(rows: list[Any]) -> list[tuple[Any, ...]] | None:
    """The columns of ``rows`` if every row is well formed (the rules of ``_check_row``), else None.

    Whole columns at a time: exact types by counting, integer ranges by one ``struct.pack`` per
    column, address lengths against the family column.
    """
    n = len(rows)
    if n == 0:
        return [()] * RAW_ROW_FIELDS
    if list(map(type, rows)).count(list) != n or list(map(len, rows)).count(RAW_ROW_FIELDS) != n:
        return None
    columns = list(zip(*rows))
    for i, code in _INT_FIELDS:
        column = columns[i]
        if list(map(type, column)).count(int) != n:
            return None  # also refuses bool, which struct would take
        try:
            struct.pack(f"!{n}{code}", *column)
        except struct.error:
            return None
    families = set(columns[1])
    if not families <= ADDRESS_LENGTH.keys():
        return None
    lengths: list[int] | None = None
    if len(families) > 1:
        lengths = list(map(ADDRESS_LENGTH.__getitem__, columns[1]))
    for i in _ADDRESS_FIELDS:
        column = columns[i]
        if list(map(type, column)).count(bytes) != n:
            return None
        if lengths is None:
            if list(map(len, column)).count(ADDRESS_LENGTH[next(iter(families))]) != n:
                return None
        elif list(map(len, column)) != lengths:
            return None
    return columns


def _rows_valid(rows: list[Any]) -> bool:
    """True only if every row is well formed (the same rules as ``_check_row``)."""
    return _columns_of(rows) is not None


_WIRE_CHECK: Final[dict[str, Any]] = {
    "int": lambda x: type(x) is int and 0 <= x <= _U64,
    "str": lambda x: type(x) is str,
    "bool": lambda x: type(x) is bool,
    "bytes16": lambda x: type(x) is bytes and len(x) == 16,
    "map": lambda x: type(x) is dict and all(type(k) is str and type(v) is bool for k, v in x.items()),
}
_COLUMN_WIRE: Final[dict[str, str]] = {c.name: c.wire for c in COLUMNS}
_INT_LIMITS: Final[dict[str, tuple[int, int]]] = {
    # integer columns narrower than the 64-bit wire type: the ClickHouse column would not hold more
    "intervalStartTime": (0, _U32),
    "intervalSeconds": (1, 0xFFFF),
    "localIPv4": (0, _U32),
    "remoteIPv4": (0, _U32),
    "localPort": (0, 0xFFFF),
    "remotePort": (0, 0xFFFF),
}


def _column_check(name: str, wire: str) -> Any:
    if name == "ipFamily":
        return lambda x: type(x) is int and (x == 4 or x == 6)
    if name in _INT_LIMITS:
        lo, hi = _INT_LIMITS[name]
        return lambda x: type(x) is int and lo <= x <= hi
    return _WIRE_CHECK[wire]


_COLUMN_CHECK: Final[dict[str, Any]] = {c.name: _column_check(c.name, c.wire) for c in COLUMNS}
_WIRE_TYPE: Final[dict[str, type]] = {"int": int, "str": str, "bool": bool, "bytes16": bytes, "map": dict}


def _column_valid(name: str, wire: str, values: list[Any]) -> bool:
    """Whole-column checks done in C where possible (``_COLUMN_CHECK`` per value only for maps)."""
    if set(map(type, values)) != {_WIRE_TYPE[wire]}:
        return False
    if wire == "int":
        lo, hi = _INT_LIMITS.get(name, (0, _U64))
        if name == "ipFamily":
            return set(values) <= {4, 6}
        return bool(lo <= min(values) and max(values) <= hi)
    if wire == "bytes16":
        return set(map(len, values)) == {16}
    if wire == "map":
        return all(map(_COLUMN_CHECK[name], values))
    return True


def decode_enriched(data: bytes, *, subject: str = "", max_bytes: int = MAX_MESSAGE_BYTES) -> EnrichedMessage:
    """Decode and validate an ENRICHED message, column types included; problems raise ``DecodeError``.

    Unknown columns are refused (``schema``): a newer enricher must bump the version or the writer
    must learn the column first. Missing columns are allowed only if the table has a default for them;
    that is the writer's decision, not the codec's.
    """
    obj = _unpack(data, subject=subject, kind="enriched", version=ENRICHED_VERSION, max_bytes=max_bytes)
    kw: dict[str, Any] = {"subject": subject, "data": bytes(data)}
    source = _field(obj, "src", str, **kw)
    node = _field(obj, "node", str, **kw)
    at = _field(obj, "at", int, **kw)
    cols = _field(obj, "cols", list, **kw)
    cdata = _field(obj, "data", list, **kw)
    if not source or at < 0:
        raise DecodeError("schema", "empty source or negative version", **kw)
    if len(cols) != len(cdata):
        raise DecodeError("schema", f"{len(cols)} column names for {len(cdata)} columns", **kw)
    if len(set(map(str, cols))) != len(cols):
        raise DecodeError("schema", "duplicate column names", **kw)
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
        if values and not _column_valid(name, wire, values):
            check = _COLUMN_CHECK[name]
            value = next(v for v in values if not check(v))
            reason = "address" if wire == "bytes16" or name.endswith("IPv4") else "schema"
            raise DecodeError(reason, f"column {name!r}: bad value {value!r:.60}", **kw)
    return EnrichedMessage(source=source, node=node, enriched_at=at, columns=cols, data=cdata)
