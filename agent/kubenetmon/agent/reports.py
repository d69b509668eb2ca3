"""Reports: one interval's rows, cut into RAW messages under a size bound. Pure: no I/O.

A report is encoded into its chunks once, when it is cut, and from then on only those bytes are stored and
published: a retry after a crash or an outage sends byte-identical messages with the same ``Nats-Msg-Id``
(node/boot/interval/seq/chunk/key), which JetStream's duplicate window drops. The ``key`` is a secret the
agent draws at start and stores with each report: JetStream's duplicate window spans the whole stream,
so an id another node could predict (node/boot/interval/seq/chunk alone) would let it publish first under
that id and turn this node's real report into a "duplicate". Agents cannot read RAW, so they cannot learn
another agent's key. A report stored by an older agent has no key and keeps the id it was first sent with.
Chunking is deterministic: rows are sorted, and each chunk takes rows while their worst-case encoded
size fits.

Every chunk carries the report's ledger (``kubenetmon.shared.ledger``): the span its deltas cover, its
totals, and what was lost in that span. An interval without traffic still gets a report (one chunk, no
rows), so a node that sends nothing is silent, never merely idle.

A report may name addresses of its rows (``names``: the DNS name each was answered for, from the agent's
``dnscache``); each chunk carries the names of its own rows' addresses, counted in its size bound.

``merge`` folds two reports into one covering both intervals, for a backlog that exceeds its bound during
a long broker outage. Only reports never offered to the broker may be merged (the caller's rule: only the
oldest pending report is ever published), so no byte can be both in the stream and in a merged report.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

import msgpack

from kubenetmon.shared.ledger import TIMESTAMPS_UNKNOWN, Ledger
from kubenetmon.shared.schema import (
    AF_INET,
    MAX_INTERVAL_SECONDS,
    RawMessage,
    RawRow,
    decode_raw,
    encode_raw,
    keyed_msg_id,
)
from kubenetmon.shared.schema.names import encoded_size

_HEADER_BOUND: Final = 512
"""Upper bound of a RAW message's encoding without its rows (node name and boot id included). RAW v2's
fifteen column headers (at most 7 bytes each) and ``n`` add about 110 bytes to v1's 120: still within.
The row bounds below are v1's, wider than v2's (at most 44 bytes of integers and the addresses)."""
_ROW_BOUND: Final = {AF_INET: 1 + 3 * 2 + 4 * (2 + 4) + 4 * 3 + 4 * 9}
_LEDGER_BOUND: Final = 10 + 10 * (8 + 9) + 4
"""Upper bound of the ``ledger`` map's encoding: ten short keys, ten 64-bit integers, and ``ts``."""
_OWNER_BOUND: Final = 1 + 5 + 2 + 64 + 5
"""Upper bound of one ``owners`` pair: array header, row index, string header, a UID (plus the list's
header, counted once per row for simplicity)."""
_ROW_BOUND_V6: Final = 1 + 3 * 2 + 4 * (2 + 16) + 4 * 3 + 4 * 9
_NAME_BOUND: Final = 2 + 16 + 3 + 253
"""Upper bound of one ``names`` entry's encoding (a 16-byte address, a 253-character name)."""
_NAMES_HEAD: Final = 6 + 5
"""The ``names`` key and a map header."""
FORMAT: Final = 2
"""2: the id key follows the chunks; 1 (no key) is read too."""


@dataclass(frozen=True, slots=True)
class Report:
    """An agent's report for one interval (or a merged span of intervals), as its encoded chunks."""

    node: str
    boot: str
    start: int
    seconds: int
    seq: int
    chunks: tuple[bytes, ...]
    rows: int
    key: str = ""
    """The agent's secret id key when the report was cut (``""``: cut by an agent without one)."""

    def msg_id(self, chunk: int) -> str:
        """The chunk's ``Nats-Msg-Id``: the record's own id (its row identity seed) plus the key."""
        body = RawMessage(
            self.node, self.boot, self.start, self.seconds, self.seq, chunk, len(self.chunks)
        ).msg_id
        return keyed_msg_id(body, self.key)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the agent knows of a report's span besides its rows (see ``Ledger``)."""

    span_from_ms: int
    """Unix milliseconds of the poll before the report's first poll."""
    span_to_ms: int
    """Unix milliseconds of the report's last poll."""
    flows: int = 0
    events_lost: int = 0
    table_drops: int = 0
    link_bytes: int = -1
    """Bytes on the node's external interfaces in the span (-1: not measured)."""
    boundary_bytes: int = 0
    """Bytes of the report's rows whose flow crosses the node boundary."""
    timestamps: int = TIMESTAMPS_UNKNOWN
    """1: conntrack creation timestamps on at every poll of the span, 0: off at one (see ``Ledger``)."""


def ledger_of(rows: list[RawRow], coverage: Coverage) -> Ledger:
    """The ledger of a report of ``rows`` over ``coverage``."""
    return Ledger(
        span_from_ms=coverage.span_from_ms,
        span_to_ms=max(coverage.span_from_ms, coverage.span_to_ms),
        rows=len(rows),
        bytes=sum(r.orig_bytes + r.reply_bytes for r in rows),
        packets=sum(r.orig_packets + r.reply_packets for r in rows),
        flows=coverage.flows,
        events_lost=coverage.events_lost,
        table_drops=coverage.table_drops,
        link_bytes=coverage.link_bytes,
        boundary_bytes=coverage.boundary_bytes if coverage.link_bytes >= 0 else 0,
        timestamps=coverage.timestamps,
    )


def coverage_of(report: Report) -> Coverage | None:
    """The coverage a report's chunks state (None for a report cut before ledgers existed)."""
    ledger = decode_raw(report.chunks[0]).ledger
    if ledger is None:
        return None
    return Coverage(
        ledger.span_from_ms,
        ledger.span_to_ms,
        ledger.flows,
        ledger.events_lost,
        ledger.table_drops,
        ledger.link_bytes,
        ledger.boundary_bytes,
        ledger.timestamps,
    )


def _row_bound(row: RawRow) -> int:
    return _ROW_BOUND.get(row.family, _ROW_BOUND_V6)


def build(
    rows: list[RawRow],
    *,
    node: str,
    boot: str,
    start: int,
    seconds: int,
    seq: int,
    max_bytes: int,
    coverage: Coverage | None = None,
    owners: dict[int, str] | None = None,
    names: dict[bytes, str] | None = None,
    key: str = "",
) -> Report:
    """Cut ``rows`` (already in a deterministic order) into messages of at most ``max_bytes`` each;
    each message names those of its rows' addresses that ``names`` names.

    No rows still makes one (empty) chunk: the report of an idle interval. ``owners``: index in ``rows``
    -> UID of the pod owning the node's socket of that row (``owners`` module), carried by its chunk.
    """
    ledger = None if coverage is None else ledger_of(rows, coverage)
    budget = max_bytes - _HEADER_BOUND - _LEDGER_BOUND - len(node.encode()) - len(boot.encode())
    budget -= _NAMES_HEAD if names else 0
    if budget < _ROW_BOUND_V6 + (2 * _NAME_BOUND if names else 0):
        raise ValueError(f"max message size {max_bytes} is too small for one row")
    owners = owners or {}
    groups: list[list[RawRow]] = [[]]
    named: list[dict[bytes, str]] = [{}]
    owned: list[dict[int, str]] = [{}]
    used = 0
    for j, row in enumerate(rows):
        uid = owners.get(j)
        extra = _OWNER_BOUND if uid else 0
        size = _row_bound(row) + extra
        new = _new_names(row, names, named[-1]) if names else None
        if new:
            size += sum(map(encoded_size, new, new.values()))
        if used + size > budget and groups[-1]:
            groups.append([])
            named.append({})
            owned.append({})
            used = 0
            if new is not None:  # in a fresh chunk every name of the row is new
                new = _new_names(row, names or {}, {})
                size = _row_bound(row) + extra + sum(map(encoded_size, new, new.values()))
        if uid:
            owned[-1][len(groups[-1])] = uid
        groups[-1].append(row)
        if new:
            named[-1].update(new)
        used += size
    chunks = tuple(
        encode_raw(
            RawMessage(
                node,
                boot,
                start,
                seconds,
                seq,
                i,
                len(groups),
                group,
                ledger=ledger,
                names=named[i],
                owners=owned[i],
            )
        )
        for i, group in enumerate(groups)
    )
    return Report(node, boot, start, seconds, seq, chunks, len(rows), key)


def _new_names(row: RawRow, names: dict[bytes, str], chunk: dict[bytes, str]) -> dict[bytes, str]:
    """The names of ``row``'s addresses (either end) that ``chunk`` does not hold yet."""
    return {
        address: names[address]
        for address in (row.orig_src, row.reply_src)
        if address in names and address not in chunk
    }


def names_of(report: Report) -> dict[bytes, str]:
    """The names a report's chunks give (for merging and tests)."""
    found: dict[bytes, str] = {}
    for chunk in report.chunks:
        found.update(decode_raw(chunk).names)
    return found


def rows_of(report: Report) -> list[RawRow]:
    """Decode a report's rows back (for merging and tests)."""
    return [row for chunk in report.chunks for row in decode_raw(chunk).rows]


def owners_of(report: Report) -> dict[tuple[object, ...], str]:
    """The socket owners a report's chunks name, by flow tuple (``row[:11]``)."""
    out: dict[tuple[object, ...], str] = {}
    for chunk in report.chunks:
        msg = decode_raw(chunk)
        if msg.owners:
            rows = msg.rows
            out.update((tuple(rows[i][:11]), uid) for i, uid in msg.owners.items())
    return out


def _indexed(rows: list[RawRow], owners: dict[tuple[object, ...], str]) -> dict[int, str]:
    if not owners:
        return {}
    return {j: owners[key] for j, row in enumerate(rows) if (key := tuple(row[:11])) in owners}


def span(older: Report, newer: Report) -> int:
    """Seconds a merge of the two reports would cover."""
    end = max(older.start + older.seconds, newer.start + newer.seconds)
    return end - min(older.start, newer.start)


def mergeable(older: Report, newer: Report) -> bool:
    """Whether one record can carry both: its interval must fit the contract's ``intervalSeconds``."""
    return span(older, newer) <= MAX_INTERVAL_SECONDS


def merge(older: Report, newer: Report, *, seq: int, max_bytes: int) -> Report:
    """One report with the rows of both, summed per row identity, spanning both intervals."""
    totals: dict[tuple[object, ...], list[int]] = {}
    for row in rows_of(older) + rows_of(newer):
        key = tuple(row[:11])
        acc = totals.setdefault(key, [0, 0, 0, 0])
        for i, value in enumerate(row[11:]):
            acc[i] += value
    rows = sorted(RawRow._make((*key, *values)) for key, values in totals.items())
    owners = {**owners_of(older), **owners_of(newer)}
    end = max(older.start + older.seconds, newer.start + newer.seconds)
    start = min(older.start, newer.start)
    return build(
        rows,
        node=newer.node,
        boot=newer.boot,
        start=start,
        seconds=end - start,
        seq=seq,
        max_bytes=max_bytes,
        coverage=_merged(coverage_of(older), coverage_of(newer)),
        owners=_indexed(rows, owners),
        names=_merged_names(names_of(older), names_of(newer)),
        key=newer.key,
    )


def _merged_names(older: dict[bytes, str], newer: dict[bytes, str]) -> dict[bytes, str]:
    """Both reports' names; an address the two name differently has none (never a guess)."""
    merged = {**older, **newer}
    for address in older.keys() & newer.keys():
        if older[address] != newer[address]:
            del merged[address]
    return merged


def _merged(older: Coverage | None, newer: Coverage | None) -> Coverage | None:
    if older is None or newer is None:
        return newer or older
    return Coverage(
        span_from_ms=min(older.span_from_ms, newer.span_from_ms),
        span_to_ms=max(older.span_to_ms, newer.span_to_ms),
        flows=newer.flows,
        events_lost=older.events_lost + newer.events_lost,
        table_drops=older.table_drops + newer.table_drops,
        link_bytes=older.link_bytes + newer.link_bytes
        if min(older.link_bytes, newer.link_bytes) >= 0
        else -1,
        boundary_bytes=older.boundary_bytes + newer.boundary_bytes,
        timestamps=stamps_of_both(older.timestamps, newer.timestamps),
    )


def stamps_of_both(a: int, b: int) -> int:
    """The timestamps state of a span made of two: off if either was off, on if both were, else unknown."""
    if 0 in (a, b):
        return 0
    return 1 if a == b == 1 else TIMESTAMPS_UNKNOWN


def split(report: Report, chunk: int, *, seq: int, max_bytes: int) -> Report:
    """A new report with the rows of one chunk the server refused as too large, in smaller messages."""
    message = decode_raw(report.chunks[chunk])
    rows = message.rows
    return build(
        rows,
        node=report.node,
        boot=report.boot,
        start=report.start,
        seconds=report.seconds,
        seq=seq,
        max_bytes=max_bytes,
        coverage=coverage_of(report),
        owners=message.owners,
        names=message.names,
        key=report.key,
    )


def dumps(report: Report) -> bytes:
    """The persisted form of a report (its chunks verbatim)."""
    packed: bytes = msgpack.packb(
        [
            FORMAT,
            report.node,
            report.boot,
            report.start,
            report.seconds,
            report.seq,
            report.rows,
            list(report.chunks),
            report.key,
        ],
        use_bin_type=True,
    )
    return packed


def loads(data: bytes) -> Report:
    """Inverse of ``dumps``; raises ValueError for anything else."""
    try:
        fmt, node, boot, start, seconds, seq, nrows, chunks, *rest = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several types; all mean "not a report"
        raise ValueError(f"not a stored report: {exc}") from None
    if (fmt, len(rest)) not in ((1, 0), (FORMAT, 1)) or not chunks:
        raise ValueError("not a stored report of this version")
    key = rest[0] if rest else ""
    if not all(isinstance(c, bytes) for c in chunks) or not isinstance(key, str):
        raise ValueError("not a stored report of this version")
    return Report(node, boot, int(start), int(seconds), int(seq), tuple(chunks), int(nrows), key)


def new_key() -> str:
    """A fresh secret id key: 128 random bits, as hex."""
    return secrets.token_hex(16)
