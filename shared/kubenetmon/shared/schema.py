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
the row-by-row checker only to name the culprit of a message already known to be invalid; a decoded
``RawMessage`` keeps those columns (what the enricher reads) and builds ``RawRow`` objects on demand.
``encode_enriched`` writes exactly what ``msgpack.packb`` writes for the ENRICHED map, packing each
repeated part of a ``spans.Spans`` column once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import FrozenInstanceError, dataclass
from itertools import chain, repeat, starmap
from typing import Any, Final, NamedTuple

import msgpack
from xxhash import xxh3_64_intdigest

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import Ledger, ReportRow, decode_ledger, decode_report, ledger_map, report_map
from kubenetmon.shared.spans import array_header, pack_columns

RAW_VERSION: Final = 1
ENRICHED_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
"""Decoders refuse larger payloads outright (``oversized``) before unpacking anything."""
MAX_NODE_LENGTH: Final = 253
"""A Kubernetes node name is a DNS subdomain: at most 253 characters."""
MAX_BOOT_LENGTH: Final = 64
"""A boot id is a UUID (36 characters); room to spare, but bounded."""
MAX_INTERVAL_SECONDS: Final = 0xFFFF
"""Longest interval a record may span: ``intervalSeconds`` is a UInt16 column."""

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


class RawMessage:
    """One chunk of one agent's report for one interval (immutable; compares by value).

    ``seq`` is the agent's report sequence within this boot: a report for an interval that was
    already partly reported (e.g. after a graceful restart mid-interval) gets a new ``seq``, so its
    rows get a distinct identity instead of replacing the earlier ones.

    A decoded message holds its rows as columns (``columns()``, what the enricher reads) and builds
    the ``RawRow`` list only when ``rows`` is read: a few hundred fewer objects per message.
    """

    __slots__ = (
        "_columns", "_identities", "_rows", "boot", "chunk", "chunks", "ledger", "node", "seconds", "seq",
        "start",
    )  # fmt: skip
    node: str
    boot: str
    start: int
    """Interval start, Unix seconds (UTC), aligned to a multiple of ``seconds``."""
    seconds: int
    """Interval length in seconds."""
    seq: int
    chunk: int
    chunks: int
    ledger: Ledger | None
    """The report's span and totals (every chunk carries it); None from agents that predate it."""
    _columns: list[Sequence[Any]] | None
    _identities: list[bytes] | None
    _rows: list[RawRow] | None

    def __init__(
        self,
        node: str,
        boot: str,
        start: int,
        seconds: int,
        seq: int,
        chunk: int,
        chunks: int,
        rows: list[RawRow] | None = None,
        *,
        columns: list[Sequence[Any]] | None = None,
        identities: list[bytes] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """``columns`` (the rows transposed) replaces ``rows``; ``decode_raw`` also gives ``identities``."""
        for name, value in zip(_HEADER, (node, boot, start, seconds, seq, chunk, chunks), strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_columns", columns)
        object.__setattr__(self, "ledger", ledger)
        object.__setattr__(self, "_identities", identities)
        object.__setattr__(self, "_rows", ([] if rows is None else rows) if columns is None else None)

    @property
    def rows(self) -> list[RawRow]:
        rows = self._rows
        if rows is None:
            rows = list(map(tuple.__new__, repeat(RawRow), zip(*(self._columns or ()), strict=True)))
            object.__setattr__(self, "_rows", rows)
        return rows

    @property
    def msg_id(self) -> str:
        """Deterministic ``Nats-Msg-Id``: a retried publish is dropped by the duplicate window."""
        return raw_msg_id(self.node, self.boot, self.start, self.seq, self.chunk)

    def columns(self) -> list[Sequence[Any]]:
        """The rows transposed: ``columns()[i]`` holds field ``i`` (``RawRow`` order) of every row."""
        if self._columns is not None:
            return self._columns
        return list(zip(*self.rows, strict=True)) if self.rows else [()] * RAW_ROW_FIELDS

    def identities(self) -> list[bytes]:
        """Each row's identity fields packed (what ``flow_ids`` hashes)."""
        if self._identities is not None:
            return self._identities
        return identities(self.columns())

    def _key(self) -> tuple[Any, ...]:
        head = (self.node, self.boot, self.start, self.seconds, self.seq, self.chunk, self.chunks)
        return (*head, self.ledger, self.rows)

    def __eq__(self, other: object) -> bool:
        if type(other) is not RawMessage:
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(f"{name}={getattr(self, name)!r}" for name in _HEADER)
        return f"RawMessage({head}, ledger={self.ledger!r}, rows={self.rows!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


_HEADER: Final = ("node", "boot", "start", "seconds", "seq", "chunk", "chunks")


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


def identities(columns: Sequence[Sequence[Any]]) -> list[bytes]:
    """The identity fields of every row given as columns, packed; ``struct.error`` if out of range."""
    return list(starmap(_IDENTITY.pack, zip(*columns[:11], strict=True)))


def flow_ids(msg_id: str, packed: Iterable[bytes]) -> list[int]:
    """The ``out`` row identity of every row given by its ``identities``; see ``flow_id``."""
    return list(map(xxh3_64_intdigest, packed, repeat(xxh3_64_intdigest(msg_id.encode()))))


def flow_id(msg_id: str, row: RawRow, direction: str) -> int:
    """Row identity as an unsigned 64-bit integer, from the RAW record alone.

    Same RAW message + same row + same direction -> same id, whatever the labels and the counters;
    so a redelivered or replayed record replaces its row instead of adding to it. It is XXH3-64 of
    the row's flow fields seeded with XXH3-64 of the message id (stable across processes and
    platforms); the ``in`` id differs from the ``out`` id in the lowest bit. (Any other direction,
    which the enricher never writes, gets its own id: the direction is hashed too.)
    """
    packed = _IDENTITY.pack(*row[:11])
    (out,) = flow_ids(msg_id, [packed])
    if direction == "out":
        return out
    if direction == "in":
        return out ^ IN_FLIP
    return xxh3_64_intdigest(packed + direction.encode(), xxh3_64_intdigest(msg_id.encode()))


# --------------------------------------------------------------------------------------------------
# codec


def encode_raw(msg: RawMessage) -> bytes:
    """Encode a RAW message (no validation: the agent builds rows from kernel data)."""
    body: dict[str, Any] = {
        "v": RAW_VERSION,
        "t": "raw",
        "node": msg.node,
        "boot": msg.boot,
        "start": msg.start,
        "secs": msg.seconds,
        "seq": msg.seq,
        "chunk": msg.chunk,
        "chunks": msg.chunks,
    }
    if msg.ledger is not None:
        body["ledger"] = ledger_map(msg.ledger)
    body["rows"] = msg.rows
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def encode_enriched(msg: EnrichedMessage) -> bytes:
    """The msgpack map below, byte for byte; ``spans.Spans`` columns are packed part by part."""
    packer = msgpack.Packer(use_bin_type=True)
    body: dict[str, Any] = {
        "v": ENRICHED_VERSION,
        "t": "enriched",
        "src": msg.source,
        "node": msg.node,
        "at": msg.enriched_at,
        "cols": msg.columns,
    }
    if msg.report is not None:
        body["report"] = report_map(msg.report)
    body["data"] = ()  # last: the empty array (its last byte) is replaced by the columns
    head: bytes = packer.pack(body)
    pieces = [memoryview(head)[:-1], array_header(len(msg.data)), *pack_columns(msg.data, packer)]
    return b"".join(pieces)  # the one copy of the whole payload


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
    if len(node) > MAX_NODE_LENGTH or len(boot) > MAX_BOOT_LENGTH:
        # every output row repeats them: unbounded, a small message would enrich into gigabytes
        raise DecodeError("schema", f"node or boot id too long ({len(node)}, {len(boot)} chars)", **kw)
    ints = {name: _field(obj, name, int, **kw) for name in ("start", "secs", "seq", "chunk", "chunks")}
    if (
        not 0 <= ints["start"] <= _U32  # a ClickHouse DateTime
        or not 0 < ints["secs"] <= MAX_INTERVAL_SECONDS
        or ints["seq"] < 0
        or not 0 <= ints["chunk"] < ints["chunks"]
    ):
        raise DecodeError("schema", f"inconsistent header {ints}", **kw)
    rows = _field(obj, "rows", list, **kw)
    valid = _columns_of(rows)
    if valid is None:  # invalid: the row-by-row checker names the culprit
        checked = [_check_row(row, i, **kw) for i, row in enumerate(rows)]
        valid = ([*zip(*checked, strict=True)] if checked else [()] * RAW_ROW_FIELDS), None
    columns, packed = valid
    ledger = obj.get("ledger")
    return RawMessage(
        node,
        boot,
        ints["start"],
        ints["secs"],
        ints["seq"],
        ints["chunk"],
        ints["chunks"],
        columns=columns,
        identities=packed,
        ledger=None if ledger is None else decode_ledger(ledger, **kw),
    )


_INT_FIELDS: Final = (0, 1, 2, 5, 6, 9, 10, 11, 12, 13, 14)
_COUNTER_FIELDS: Final = (11, 12, 13, 14)
_ADDRESS_FIELDS: Final = (3, 4, 7, 8)


def _columns_of(rows: list[Any]) -> tuple[list[Sequence[Any]], list[bytes] | None] | None:
    """The columns and ``identities`` of ``rows`` if every row is well formed (the rules of
    ``_check_row``), else None.

    ``rows`` are as msgpack builds them: integers fit in [-2**63, 2**64), binaries are ``bytes``.
    Whole columns at a time, in C: the rows are flattened (one iterator at a time: no burst of
    objects for the garbage collector) and sliced into columns; integers must be exactly ``int``
    (not ``bool``); packing the identities checks the small integers' ranges and that addresses
    are binaries; counters must not be negative; address lengths must be the family's.
    """
    n = len(rows)
    if n == 0:
        return [()] * RAW_ROW_FIELDS, []
    if list(map(type, rows)).count(list) != n or list(map(len, rows)).count(RAW_ROW_FIELDS) != n:
        return None
    flat = list(chain.from_iterable(rows))
    columns: list[Sequence[Any]] = [flat[i::RAW_ROW_FIELDS] for i in range(RAW_ROW_FIELDS)]
    ints = chain.from_iterable(columns[i] for i in _INT_FIELDS)
    if list(map(type, ints)).count(int) != len(_INT_FIELDS) * n:
        return None
    try:
        packed = identities(columns)
    except struct.error:
        return None
    if min(chain.from_iterable(columns[i] for i in _COUNTER_FIELDS)) < 0:
        return None
    families = set(columns[1])
    if not families <= ADDRESS_LENGTH.keys():
        return None
    lengths = list(map(len, chain.from_iterable(columns[i] for i in _ADDRESS_FIELDS)))
    if len(families) == 1:
        valid = lengths.count(ADDRESS_LENGTH[families.pop()]) == len(lengths)
    else:
        valid = lengths == list(map(ADDRESS_LENGTH.__getitem__, columns[1])) * len(_ADDRESS_FIELDS)
    return (columns, packed) if valid else None


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
    "intervalSeconds": (1, MAX_INTERVAL_SECONDS),
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
    report = obj.get("report")
    return EnrichedMessage(
        source=source,
        node=node,
        enriched_at=at,
        columns=cols,
        data=cdata,
        report=None if report is None else decode_report(report, **kw),
    )
