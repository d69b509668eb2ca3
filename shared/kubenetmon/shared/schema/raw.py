"""The RAW contract (agent -> enricher): ``RawRow``, ``RawMessage``, and their strict codec.

RAW row fields (in this order; see ``RawRow``)::

    proto, family, zone,
    orig_src, orig_dst, orig_sport, orig_dport,      # addresses: 4 or 16 raw bytes per family
    reply_src, reply_dst, reply_sport, reply_dport,
    orig_packets, orig_bytes, reply_packets, reply_bytes   # deltas for this interval

Two layouts (``v``): v1 sends ``rows``, one msgpack array of these fields per row; v2 (what agents
write) sends ``n`` rows as ``cols``, one binary per field (``planes``: integers as byte planes,
addresses one after another), 40 % fewer bytes on disk under the stream's S2 compression. Both decode
to the same columns, checked by the same rules; v1 still decodes (``RAW_VERSIONS``).

Next to the rows, an optional ``names`` map (address bytes -> DNS name, ``kubenetmon.shared.schema.names``):
the name the observer's node saw answered for an address of the rows. Agents before it send none.

The first eleven fields are the flow tuple (``flow.FlowTuple``). Within one RAW message an agent emits
at most one row per flow tuple: that tuple plus the message's identity is the row identity in ClickHouse
(``identity.flow_id``).

Decoding validates whole columns at once (C-level passes over the transposed rows) and falls back to
the row-by-row checker only to name the culprit of a message already known to be invalid; both read
each field's rule from its domain in ``RawRow`` (``domains``). A decoded ``RawMessage`` keeps those
columns (what the enricher reads) and builds ``RawRow`` objects on demand.

This module must stay free of I/O and of any service's imports.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import FrozenInstanceError
from itertools import chain, repeat
from typing import Annotated, Any, Final

import msgpack

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import Ledger, decode_ledger, ledger_map
from kubenetmon.shared.schema import envelope, planes
from kubenetmon.shared.schema.domains import ADDRESS, UINT64, Address, Ints
from kubenetmon.shared.schema.flow import FLOW_FIELDS, FlowTuple
from kubenetmon.shared.schema.identity import identities, raw_msg_id
from kubenetmon.shared.schema.limits import (
    ADDRESS_LENGTH,
    MAX_BOOT_LENGTH,
    MAX_INTERVAL_SECONDS,
    MAX_MESSAGE_BYTES,
    MAX_NODE_LENGTH,
    RAW_VERSION,
    RAW_VERSIONS,
    U32,
)
from kubenetmon.shared.schema.names import decode_names


class RawRow(FlowTuple):
    """One flow's counter deltas over one interval, as seen by one observer node: the flow tuple, then
    the counters."""

    __slots__ = ()
    orig_packets: Annotated[int, UINT64]
    orig_bytes: Annotated[int, UINT64]
    reply_packets: Annotated[int, UINT64]
    reply_bytes: Annotated[int, UINT64]


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
        "_columns", "_identities", "_rows", "boot", "chunk", "chunks", "ledger", "names", "node", "owners",
        "seconds", "seq", "start",
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
    owners: dict[int, str] | None
    """Row index -> UID of the pod owning the node's socket of that row (hostNetwork pods), where the
    agent could tell; None when it says nothing (optional ``owners`` map on the wire)."""
    names: dict[bytes, str]
    """DNS name of some addresses of the rows (empty: none known, or an agent that predates it)."""
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
        owners: dict[int, str] | None = None,
        names: dict[bytes, str] | None = None,
    ) -> None:
        """``columns`` (the rows transposed) replaces ``rows``; ``decode_raw`` also gives ``identities``."""
        for name, value in zip(_HEADER, (node, boot, start, seconds, seq, chunk, chunks), strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_columns", columns)
        object.__setattr__(self, "ledger", ledger)
        object.__setattr__(self, "owners", owners or None)
        object.__setattr__(self, "names", names or {})
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
        return (*head, self.ledger, self.names, self.owners, self.rows)

    def __eq__(self, other: object) -> bool:
        if type(other) is not RawMessage:
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(f"{name}={getattr(self, name)!r}" for name in _HEADER)
        names = f", names={self.names!r}" if self.names else ""
        return f"RawMessage({head}, ledger={self.ledger!r}{names}, rows={self.rows!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


_HEADER: Final = ("node", "boot", "start", "seconds", "seq", "chunk", "chunks")


def encode_raw(msg: RawMessage, *, version: int = RAW_VERSION) -> bytes:
    """Encode a RAW message in layout ``version`` (no validation: the agent builds rows from kernel
    data; a counter out of 64 bits raises ``ValueError`` or ``OverflowError`` in v2)."""
    if version not in RAW_VERSIONS:
        raise ValueError(f"unknown RAW version {version}")
    body: dict[str, Any] = {
        "v": version,
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
    if msg.owners:
        body["owners"] = [[i, uid] for i, uid in sorted(msg.owners.items())]
    if msg.names:
        body["names"] = msg.names
    if version == 1:
        body["rows"] = msg.rows
    else:
        columns = msg.columns()
        body["n"] = len(columns[0])
        body["cols"] = [
            planes.pack_addresses(column) if at in _ADDRESS_FIELDS else planes.pack_ints(column)
            for at, column in enumerate(columns)
        ]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


# Each field's rule, read once from RawRow's declaration; both checkers below derive from these tables.
_DOMAINS: Final = RawRow.domains()
_INTS: Final = tuple(
    (at, name, domain)
    for at, (name, domain) in enumerate(zip(RawRow._fields, _DOMAINS, strict=True))
    if isinstance(domain, Ints)
)
_ADDRESSES: Final = tuple(
    (at, name)
    for at, (name, domain) in enumerate(zip(RawRow._fields, _DOMAINS, strict=True))
    if isinstance(domain, Address)
)
_FAMILY: Final = RawRow._fields.index("family")
_INT_FIELDS: Final = tuple(at for at, _, _ in _INTS)
_ADDRESS_FIELDS: Final = tuple(at for at, _ in _ADDRESSES)
_UNPACKED: Final = tuple(
    (domain, tuple(at for at, _, d in _INTS if d is domain and at >= FLOW_FIELDS))
    for domain in dict.fromkeys(d for at, _, d in _INTS if at >= FLOW_FIELDS)
)
"""The integer fields outside the flow tuple (the counters), grouped by domain; the flow tuple's integer
ranges are checked by packing the identity, whose widths are those same domains."""


def _check_row(row: Any, i: int, *, subject: str, data: bytes) -> RawRow:
    """``row`` if it is well formed, checked field by field (integers first) to name the culprit."""
    if not isinstance(row, list) or len(row) != RAW_ROW_FIELDS:
        raise DecodeError("schema", f"row {i}: not an array of {RAW_ROW_FIELDS}", subject=subject, data=data)
    for at, name, domain in _INTS:
        if not domain.admits(value := row[at]):
            raise DecodeError("schema", f"row {i}: {name}={value!r} out of range", subject=subject, data=data)
    family = row[_FAMILY]
    length = ADDRESS_LENGTH.get(family)
    if length is None:
        raise DecodeError("address", f"row {i}: unknown address family {family}", subject=subject, data=data)
    for at, name in _ADDRESSES:
        if not ADDRESS.admits(row[at], family=family):
            raise DecodeError(
                "address", f"row {i}: {name} is not a {length}-byte address", subject=subject, data=data
            )
    return RawRow._make(row)


def decode_raw(data: bytes, *, subject: str = "", max_bytes: int = MAX_MESSAGE_BYTES) -> RawMessage:
    """Decode and validate a RAW message; any problem raises ``DecodeError``."""
    obj = envelope.unpack(data, subject=subject, kind="raw", version=RAW_VERSIONS, max_bytes=max_bytes)
    kw: dict[str, Any] = {"subject": subject, "data": bytes(data)}
    node = envelope.field(obj, "node", str, **kw)
    boot = envelope.field(obj, "boot", str, **kw)
    if not node or not boot:
        raise DecodeError("schema", "empty node or boot id", **kw)
    if len(node) > MAX_NODE_LENGTH or len(boot) > MAX_BOOT_LENGTH:
        # every output row repeats them: unbounded, a small message would enrich into gigabytes
        raise DecodeError("schema", f"node or boot id too long ({len(node)}, {len(boot)} chars)", **kw)
    ints = {
        name: envelope.field(obj, name, int, **kw) for name in ("start", "secs", "seq", "chunk", "chunks")
    }
    if (
        not 0 <= ints["start"] <= U32  # a ClickHouse DateTime
        or not 0 < ints["secs"] <= MAX_INTERVAL_SECONDS
        or ints["seq"] < 0
        or not 0 <= ints["chunk"] < ints["chunks"]
    ):
        raise DecodeError("schema", f"inconsistent header {ints}", **kw)
    if obj["v"] == 1:
        rows = envelope.field(obj, "rows", list, **kw)
        valid = _columns_of(rows)
    else:
        if "rows" in obj:
            raise DecodeError("schema", "a v2 message sends cols, not rows", **kw)
        decoded = _unpack_v2(obj, kw=kw)
        valid = _checked(decoded, len(decoded[0]), typed=True)
        rows = [] if valid is not None else list(map(list, zip(*decoded, strict=True)))
    if valid is None:  # invalid: the row-by-row checker names the culprit
        checked = [_check_row(row, i, **kw) for i, row in enumerate(rows)]
        valid = ([*zip(*checked, strict=True)] if checked else [()] * RAW_ROW_FIELDS), None
    columns, packed = valid
    ledger = obj.get("ledger")
    owners = _owners(obj.get("owners"), len(columns[0]), kw=kw)
    names = obj.get("names")
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
        owners=owners,
        names=None if names is None else decode_names(names, **kw),
    )


MAX_UID_LENGTH: Final = 64


def _owners(value: Any, rows: int, *, kw: dict[str, Any]) -> dict[int, str] | None:
    """The optional ``owners`` (pairs of row index and pod UID) as a map; anything malformed is ``schema``."""
    if value is None:
        return None
    if type(value) is not list or not all(
        type(pair) is list
        and len(pair) == 2
        and type(pair[0]) is int
        and 0 <= pair[0] < rows
        and type(pair[1]) is str
        and 0 < len(pair[1]) <= MAX_UID_LENGTH
        for pair in value
    ):
        raise DecodeError("schema", "owners must be pairs of a row index and a pod UID", **kw)
    return {i: uid for i, uid in value}


def _columns_of(rows: list[Any]) -> tuple[list[Sequence[Any]], list[bytes] | None] | None:
    """The columns and ``identities`` of v1 ``rows`` if every row is well formed (the rules of
    ``_check_row``), else None.

    ``rows`` are as msgpack builds them: integers fit in [-2**63, 2**64), binaries are ``bytes``.
    Whole columns at a time, in C: the rows are flattened (one iterator at a time: no burst of
    objects for the garbage collector) and sliced into columns, then ``_checked``.
    """
    n = len(rows)
    if n == 0:
        return [()] * RAW_ROW_FIELDS, []
    if list(map(type, rows)).count(list) != n or list(map(len, rows)).count(RAW_ROW_FIELDS) != n:
        return None
    flat = list(chain.from_iterable(rows))
    return _checked([flat[i::RAW_ROW_FIELDS] for i in range(RAW_ROW_FIELDS)], n, typed=False)


def _checked(
    columns: list[Sequence[Any]], n: int, *, typed: bool
) -> tuple[list[Sequence[Any]], list[bytes] | None] | None:
    """``columns`` and their ``identities`` if every row is well formed (the rules of ``_check_row``),
    else None. Integers must be exactly ``int`` (not ``bool``; ``typed``: the caller built them so);
    packing the identities checks the flow tuple's integer ranges and that addresses are binaries; the
    other integers (counters) are checked against their domains; address lengths must be the family's.
    """
    if n == 0:
        return [()] * RAW_ROW_FIELDS, []
    ints = chain.from_iterable(columns[i] for i in _INT_FIELDS)
    if not typed and list(map(type, ints)).count(int) != len(_INT_FIELDS) * n:
        return None
    try:
        packed = identities(columns)  # the flow tuple's ranges: each field packed at its domain's width
    except struct.error:
        return None
    for domain, at in _UNPACKED:
        if not domain.bounded(chain.from_iterable(columns[i] for i in at)):
            return None
    families = set(columns[_FAMILY])
    if not families <= ADDRESS_LENGTH.keys():
        return None
    lengths = list(map(len, chain.from_iterable(columns[i] for i in _ADDRESS_FIELDS)))
    if len(families) == 1:
        valid = lengths.count(ADDRESS_LENGTH[families.pop()]) == len(lengths)
    else:
        valid = lengths == list(map(ADDRESS_LENGTH.__getitem__, columns[_FAMILY])) * len(_ADDRESS_FIELDS)
    return (columns, packed) if valid else None


def _unpack_v2(obj: dict[str, Any], *, kw: dict[str, Any]) -> list[Sequence[Any]]:
    """The plain columns of a v2 message (``planes``); values are not checked yet (``_checked``).

    The structure is: ``n`` rows, at most ``MAX_MESSAGE_BYTES`` cells in all (checked before anything
    is expanded), ``cols`` one entry per field; every integer column holds ``n`` values; every row's
    family is known before the addresses are cut by its length (else the row is named, as in v1).
    """
    n = envelope.field(obj, "n", int, **kw)
    cols = envelope.field(obj, "cols", list, **kw)
    if not 0 <= n <= MAX_MESSAGE_BYTES // RAW_ROW_FIELDS:
        raise DecodeError("schema", f"{n} rows out of range", **kw)
    if len(cols) != RAW_ROW_FIELDS:
        raise DecodeError("schema", f"{len(cols)} columns, expected {RAW_ROW_FIELDS}", **kw)
    columns: list[Sequence[Any]] = [()] * RAW_ROW_FIELDS
    for at in _INT_FIELDS:
        try:
            columns[at] = planes.unpack_ints(cols[at], n)
        except planes.PlanesError as exc:
            raise DecodeError("schema", f"column {RawRow._fields[at]}: {exc}", **kw) from None
    families = columns[_FAMILY]
    known = set(families)
    if not known <= ADDRESS_LENGTH.keys():
        i, family = next((i, f) for i, f in enumerate(families) if f not in ADDRESS_LENGTH)
        raise DecodeError("address", f"row {i}: unknown address family {family}", **kw)
    lengths: int | list[int] = (
        ADDRESS_LENGTH[known.pop()] if len(known) == 1 else list(map(ADDRESS_LENGTH.__getitem__, families))
    )
    for at in _ADDRESS_FIELDS:
        try:
            columns[at] = planes.unpack_addresses(cols[at], lengths, n)
        except planes.PlanesError as exc:  # an address of the wrong length shifts the others
            raise DecodeError("address", f"column {RawRow._fields[at]}: {exc}", **kw) from None
    return columns


def _rows_valid(rows: list[Any]) -> bool:
    """True only if every row is well formed (the same rules as ``_check_row``)."""
    return _columns_of(rows) is not None
