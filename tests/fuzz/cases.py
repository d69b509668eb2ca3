"""Hypothesis strategies for what the stages may be fed: good messages, and bad ones of every kind.

A case is ``(category, payload)``. Bad categories are built to be refused by the strict decoders
(truncated, wrong version or kind, wrong types, bad rows or columns, invalid addresses, random bytes or
random msgpack, bit flips, nesting, declared lengths, oversized); ``verdict`` says what the decoder of
that stream answers, which is what the DLQ header must say. ``unknown fields`` at the top level are
allowed within a major version, so such messages are *good* and must be stored like any other.

Good messages carry known bytes: every RAW record is a flow from a pod on the observer to a public
address (kept, ``out`` = original counters, ``in`` = reply counters), every ENRICHED row a known value,
so the stored sums are exact without asking the code under test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from kubenetmon.shared import schema
from kubenetmon.shared.errors import DecodeError

OBSERVER = "n1"
"""The observer node of good RAW messages: its pods are in the inventory of ``tests.enricher``."""
LOCAL_PODS = [ipaddress.IPv4Address(f"10.1.0.{10 + i}").packed for i in range(4)]
PUBLIC = [ipaddress.IPv4Address(a).packed for a in ("3.5.140.9", "8.8.8.8", "1.1.1.1", "9.9.9.9")]
DIRECT_NODE = "fuzz-direct"
"""``observerNode`` of good ENRICHED messages published straight to the writer."""
U16 = st.integers(0, 0xFFFF)
U64 = st.integers(0, (1 << 64) - 1)
COUNTER = st.integers(0, 10**12)
MUTATIONS = 6
"""Bad cases drawn from one valid message at most (hypothesis pays per example, not per case)."""
PACKABLE_INT = st.integers(-(1 << 63), (1 << 64) - 1)
"""Every integer msgpack can carry."""


@dataclass(frozen=True)
class Draft:
    """A good message before it gets its unique identity (see ``finish_raw``, ``finish_enriched``)."""

    category: str
    fields: dict[str, Any]
    records: int
    bytes: int


@dataclass(frozen=True)
class Case:
    category: str
    payload: bytes
    records: int = 0
    """Good RAW: records kept. Good ENRICHED: rows."""
    bytes: int = 0
    """Good: the bytes the stored rows must sum to."""


def verdict(kind: str, payload: bytes) -> str | None:
    """The decoder's reason for refusing ``payload`` (``kind`` ``raw`` or ``enriched``), None if it is valid."""
    try:
        (schema.decode_raw if kind == "raw" else schema.decode_enriched)(payload)
    except DecodeError as exc:
        return exc.reason
    return None


def collect(strategy: st.SearchStrategy[Any], count: int, *, seed_value: int) -> list[Any]:
    """``count`` examples drawn by hypothesis from ``strategy`` (generation only, no shrinking)."""
    out: list[Any] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(example: Any) -> None:
        out.append(example)

    gather()
    return out


# ------------------------------------------------------------------------------------------ RAW


def good_raw_message(
    key: int, draw: Callable[[st.SearchStrategy[Any]], Any], *, max_rows: int = 12
) -> tuple[dict[str, Any], int, int]:
    """A valid RAW message map (unique by ``key``) and its kept records and bytes."""
    rows, total = [], 0
    for port in range(1, draw(st.integers(1, max_rows)) + 1):
        src, dst = draw(st.sampled_from(LOCAL_PODS)), draw(st.sampled_from(PUBLIC))
        counters = [draw(st.integers(1, 10**6)), draw(COUNTER), draw(st.integers(0, 10**6)), draw(COUNTER)]
        rows.append([draw(st.sampled_from([6, 17])), 2, 0, src, dst, 30000 + port, 443,
                     dst, src, 443, 30000 + port, *counters])  # fmt: skip
        total += counters[1] + counters[3]
    start = 1_800_000_000 - 86400 + 60 * (key % 1000)
    fields = {"v": 1, "t": "raw", "node": OBSERVER, "boot": "fuzz", "start": start, "secs": 60,
              "seq": key, "chunk": 0, "chunks": 1, "rows": rows}  # fmt: skip
    return fields, len(rows), total


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


msgpack_values = st.recursive(
    st.none() | st.booleans() | PACKABLE_INT | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
WRONG_TYPES = (
    st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.lists(PACKABLE_INT, max_size=2)
)


@st.composite
def bad_raw(draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[Case]:
    """A few mutations of one valid RAW message."""
    base, _, _ = good_raw_message(draw(st.integers(0, 10**6)), draw, max_rows=4)
    data = _pack(base)
    kinds = draw(st.lists(st.sampled_from(sorted(_RAW_MUTATIONS)), min_size=1, max_size=MUTATIONS))
    return [Case(f"raw:{kind}", _RAW_MUTATIONS[kind](base, data, draw)) for kind in kinds]


def _truncated(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


def _version(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return _pack({**base, "v": draw(PACKABLE_INT.filter(lambda v: v != 1))})


def _version_type(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    if draw(st.booleans()):
        return _pack({k: v for k, v in base.items() if k != "v"})
    return _pack({**base, "v": draw(WRONG_TYPES)})


def _kind(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return _pack({**base, "t": draw(st.text(max_size=10).filter(lambda t: t != base["t"]) | WRONG_TYPES)})


def _field_type(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name = draw(st.sampled_from([k for k in base if k not in ("v", "t")]))
    wrong = draw(WRONG_TYPES.filter(lambda x: type(x) is not type(base[name])))
    return _pack({**base, name: wrong})


def _header_range(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name, value = draw(st.sampled_from([
        ("start", -1), ("start", 1 << 32), ("secs", 0), ("secs", 1 << 16), ("seq", -5),
        ("chunk", 1), ("chunks", 0), ("node", ""), ("boot", ""), ("node", "n" * 254), ("boot", "b" * 65),
    ]))  # fmt: skip
    return _pack({**base, name: value})


def _bad_row(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    rows = [list(r) for r in base["rows"]]
    i = draw(st.integers(0, len(rows) - 1))
    how = draw(st.sampled_from(["short", "long", "type", "range", "not_list"]))
    if how == "short":
        rows[i] = rows[i][: draw(st.integers(0, 14))]
    elif how == "long":
        rows[i] = [*rows[i], *draw(st.lists(PACKABLE_INT, min_size=1, max_size=3))]
    elif how == "type":
        j = draw(st.sampled_from([0, 1, 2, 5, 6, 9, 10, 11, 12, 13, 14]))
        rows[i][j] = draw(WRONG_TYPES)
    elif how == "range":
        j, hi = draw(st.sampled_from([(0, 255), (2, 0xFFFF), (5, 0xFFFF), (10, 0xFFFF), (12, (1 << 64) - 1)]))
        too_big = st.integers(hi + 1, (1 << 64) - 1) if hi < (1 << 64) - 1 else st.nothing()
        rows[i][j] = draw(too_big | st.integers(-(1 << 63), -1))
    else:
        rows[i] = draw(
            WRONG_TYPES.filter(lambda x: not isinstance(x, list)) | st.dictionaries(st.text(), PACKABLE_INT)
        )
    return _pack({**base, "rows": rows})


def _bad_address(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    rows = [list(r) for r in base["rows"]]
    i = draw(st.integers(0, len(rows) - 1))
    how = draw(st.sampled_from(["length", "family", "type", "v6_as_v4"]))
    if how == "length":
        j = draw(st.sampled_from([3, 4, 7, 8]))
        rows[i][j] = draw(st.binary(max_size=20).filter(lambda b: len(b) != 4))
    elif how == "family":
        rows[i][1] = draw(st.integers(0, 255).filter(lambda f: f not in (2, 10)))
    elif how == "type":
        rows[i][draw(st.sampled_from([3, 4, 7, 8]))] = draw(st.text(max_size=16) | PACKABLE_INT)
    else:
        rows[i][1] = 10  # four-byte addresses under the IPv6 family
    return _pack({**base, "rows": rows})


def _random_bytes(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return bytes(draw(st.binary(max_size=200)))


def _random_msgpack(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return _pack(draw(msgpack_values))


def _flipped(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


def _nested(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    depth = draw(st.integers(1100, 5000))  # msgpack's unpacker refuses more than 1024 levels
    return _pack({**base, "rows": []})[:-1] + b"\x91" * depth + b"\xc0"


def _declared_length(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    header = draw(st.sampled_from([b"\xdd", b"\xdf", b"\xdb", b"\xc6"]))
    return (
        header
        + draw(st.integers(1 << 20, (1 << 32) - 1)).to_bytes(4, "big")
        + b"\x00" * draw(st.integers(0, 8))
    )


def _trailing(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return data + _pack(draw(msgpack_values))


_RAW_MUTATIONS: dict[str, Callable[[dict[str, Any], bytes, Any], bytes]] = {
    "truncated": _truncated,
    "version": _version,
    "version_type": _version_type,
    "kind": _kind,
    "field_type": _field_type,
    "header_range": _header_range,
    "row": _bad_row,
    "address": _bad_address,
    "random_bytes": _random_bytes,
    "random_msgpack": _random_msgpack,
    "flipped": _flipped,
    "nested": _nested,
    "declared_length": _declared_length,
    "trailing_data": _trailing,
}


@st.composite
def good_raw(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Draft:
    """A valid RAW message, sometimes with fields a newer agent might add (ignored within the version)."""
    fields, records, total = good_raw_message(0, draw)
    if draw(st.booleans()):
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=8), msgpack_values, min_size=1, max_size=3))
        fields = {**{k: v for k, v in extra.items() if k not in fields}, **fields}
    return Draft("raw:good", fields, records, total)


def finish_raw(draft: Draft, key: int) -> Case:
    """The draft as a message of its own: ``key`` (unique per test) makes its id and its rows' ids."""
    fields = {**draft.fields, "seq": key, "start": 1_800_000_000 - 86400 + 60 * (key % 1000)}
    return Case(draft.category, _pack(fields), draft.records, draft.bytes)


def oversized(kind: str, size: int) -> bytes:
    """A well-formed map of the given ``kind`` padded with an unknown field to exactly ``size`` bytes."""
    head = _pack({"v": 1, "t": kind, "pad": b""})
    pad = size - len(head)
    for _ in range(3):  # the bin header grows with the length
        data = _pack({"v": 1, "t": kind, "pad": b"\0" * pad})
        pad -= len(data) - size
    data = _pack({"v": 1, "t": kind, "pad": b"\0" * pad})
    assert len(data) == size, (len(data), size)
    return data


# ------------------------------------------------------------------------------------------ ENRICHED


def good_enriched_fields(
    key: int, draw: Callable[[st.SearchStrategy[Any]], Any], *, max_rows: int = 8
) -> tuple[dict[str, Any], int, int]:
    """A valid ENRICHED map: ``rows`` rows of known bytes, full or partial columns (unique by ``key``)."""
    n = draw(st.integers(1, max_rows))
    source = f"fuzz/direct/{key}"
    values: dict[str, list[Any]] = {}
    for c in schema.COLUMNS:
        values[c.name] = [{"int": 0, "str": "", "bool": False, "bytes16": bytes(16), "map": {}}[c.wire]] * n
    byte_counts = [draw(COUNTER) for _ in range(n)]
    values.update(
        intervalStartTime=[1_800_000_000 - 3600] * n,
        intervalSeconds=[60] * n,
        direction=[draw(st.sampled_from(["out", "in"])) for _ in range(n)],
        observerNode=[DIRECT_NODE] * n,
        ipFamily=[draw(st.sampled_from([4, 6])) for _ in range(n)],
        localPod=[draw(st.text(max_size=30)) for _ in range(n)],
        connectionFlags=[
            draw(st.dictionaries(st.text(max_size=5), st.booleans(), max_size=2)) for _ in range(n)
        ],
        bytes=byte_counts,
        flowId=[(key << 8) + i for i in range(n)],
        sourceId=[source] * n,
    )
    names = [c.name for c in schema.COLUMNS]
    if draw(st.booleans()):  # a partial set of columns is allowed (the table has defaults)
        keep = set(draw(st.lists(st.sampled_from(names), unique=True)))
        keep |= {"intervalStartTime", "observerNode", "flowId", "bytes", "direction", "sourceId"}
        names = [n_ for n_ in names if n_ in keep]
    fields = {"v": 1, "t": "enriched", "src": source, "node": DIRECT_NODE, "at": draw(U64),
              "cols": names, "data": [values[n_] for n_ in names]}  # fmt: skip
    return fields, n, sum(byte_counts)


@st.composite
def good_enriched(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Draft:
    fields, rows, total = good_enriched_fields(0, draw)
    if draw(st.booleans()):
        fields = {**fields, "future": draw(msgpack_values)}
    return Draft("enriched:good", fields, rows, total)


def finish_enriched(draft: Draft, key: int) -> Case:
    source = f"fuzz/direct/{key}"
    cols, data = draft.fields["cols"], list(draft.fields["data"])
    n = len(data[0])
    data[cols.index("sourceId")] = [source] * n
    data[cols.index("flowId")] = [(key << 8) + i for i in range(n)]
    return Case(
        draft.category, _pack({**draft.fields, "src": source, "data": data}), draft.records, draft.bytes
    )


@st.composite
def bad_enriched(draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[Case]:
    """A few mutations of one valid ENRICHED message."""
    base, _, _ = good_enriched_fields(draw(st.integers(0, 10**6)), draw, max_rows=3)
    data = _pack(base)
    kinds = draw(st.lists(st.sampled_from(sorted(_ENRICHED_MUTATIONS)), min_size=1, max_size=MUTATIONS))
    return [Case(f"enriched:{kind}", _ENRICHED_MUTATIONS[kind](base, data, draw)) for kind in kinds]


def _column_value(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    cols = base["cols"]
    i = draw(st.integers(0, len(cols) - 1))
    column = list(base["data"][i])
    wire = {c.name: c.wire for c in schema.COLUMNS}[cols[i]]
    bad = {
        "int": st.integers(-(1 << 63), -1) | WRONG_TYPES.filter(lambda x: type(x) is not int),
        "str": PACKABLE_INT | st.binary(max_size=4) | st.none(),
        "bool": st.integers(0, 1) | st.text(max_size=3) | st.none(),
        "bytes16": st.binary(max_size=32).filter(lambda b: len(b) != 16) | st.text(max_size=16),
        "map": st.dictionaries(st.text(max_size=3), PACKABLE_INT, min_size=1, max_size=2)
        | st.lists(st.booleans()),
    }[wire]
    column[draw(st.integers(0, len(column) - 1))] = draw(bad)
    data_ = list(base["data"])
    data_[i] = column
    return _pack({**base, "data": data_})


def _narrow_int(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name, value = draw(st.sampled_from([
        ("intervalStartTime", 1 << 32), ("intervalSeconds", 0), ("intervalSeconds", 1 << 16),
        ("localIPv4", 1 << 32), ("remotePort", 1 << 16), ("ipFamily", 5),
    ]))  # fmt: skip
    cols, data_ = [*base["cols"]], [*base["data"]]
    n = len(data_[0])
    if name in cols:
        data_[cols.index(name)] = [value] * n
    else:
        cols.append(name)
        data_.append([value] * n)
    return _pack({**base, "cols": cols, "data": data_})


def _unknown_column(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name = draw(st.text(max_size=12).filter(lambda s: s not in schema.COLUMN_INDEX) | PACKABLE_INT)
    return _pack({**base, "cols": [*base["cols"], name], "data": [*base["data"], [0] * len(base["data"][0])]})


def _shape(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    cols, data_ = [*base["cols"]], [*base["data"]]
    how = draw(st.sampled_from(["duplicate", "lengths", "count", "not_list", "empty_src", "negative_at"]))
    if how == "duplicate":
        cols.append(cols[0])
        data_.append(data_[0])
    elif how == "lengths":
        i = draw(st.integers(0, len(cols) - 1))
        data_[i] = [*data_[i], data_[i][0]]
    elif how == "count":
        data_ = data_[:-1]
    elif how == "not_list":
        data_[draw(st.integers(0, len(cols) - 1))] = draw(
            WRONG_TYPES.filter(lambda x: not isinstance(x, list))
        )
    elif how == "empty_src":
        return _pack({**base, "src": ""})
    else:
        return _pack({**base, "at": draw(st.integers(-(1 << 63), -1))})
    return _pack({**base, "cols": cols, "data": data_})


def _rejected_by_clickhouse(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    """Valid for the decoder, refused by the table: a ``direction`` outside its Enum."""
    cols, data_ = [*base["cols"]], [*base["data"]]
    column = list(data_[cols.index("direction")])
    column[draw(st.integers(0, len(column) - 1))] = draw(st.sampled_from(["sideways", "OUT", "", "both"]))
    data_[cols.index("direction")] = column
    return _pack({**base, "data": data_})


_ENRICHED_MUTATIONS: dict[str, Callable[[dict[str, Any], bytes, Any], bytes]] = {
    "truncated": _truncated,
    "version": _version,
    "version_type": _version_type,
    "kind": _kind,
    "field_type": _field_type,
    "column_value": _column_value,
    "narrow_int": _narrow_int,
    "unknown_column": _unknown_column,
    "shape": _shape,
    "random_bytes": _random_bytes,
    "random_msgpack": _random_msgpack,
    "flipped": _flipped,
    "nested": _nested,
    "declared_length": _declared_length,
    "trailing_data": _trailing,
}


@st.composite
def rejected_enriched(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Case:
    """Decodes, but the table refuses it: the writer must isolate it (``invalid_batch``)."""
    base, _, _ = good_enriched_fields(0, draw, max_rows=3)
    return Case("enriched:clickhouse_rejects", _rejected_by_clickhouse(base, b"", draw))


# ------------------------------------------------------------------------------------------ big ones


def _raw_rows(count: int) -> tuple[list[list[Any]], int]:
    rows, total = [], 0
    for i in range(count):
        src, dst = LOCAL_PODS[i % 4], PUBLIC[i // 4 % 4]
        port = 1024 + i // 16
        rows.append(
            [6, 2, 0, src, dst, port, 443 + i % 4 * 1000, dst, src, 443 + i % 4 * 1000, port, 1, i, 1, 7]
        )
        total += i + 7
    return rows, total


def big_good_raw(records: int, key: int) -> Case:
    """One valid RAW message of ``records`` distinct kept records (the enricher splits its output)."""
    rows, total = _raw_rows(records)
    fields = {"v": 1, "t": "raw", "node": OBSERVER, "boot": "fuzz-big", "start": 1_800_000_000 - 7200,
              "secs": 60, "seq": key, "chunk": 0, "chunks": 1, "rows": rows}  # fmt: skip
    return Case("raw:good_big", _pack(fields), records, total)


def big_raw_bad_tail(records: int) -> Case:
    """Megabytes of valid rows, then one out-of-range row: refused as a whole (``schema``)."""
    rows, _ = _raw_rows(records)
    rows.append([*rows[-1][:5], 70000, *rows[-1][6:]])
    fields = {"v": 1, "t": "raw", "node": OBSERVER, "boot": "fuzz-big", "start": 1_800_000_000,
              "secs": 60, "seq": 0, "chunk": 0, "chunks": 1, "rows": rows}  # fmt: skip
    return Case("raw:big_bad_tail", _pack(fields))


def big_enriched_bad_tail(rows: int) -> Case:
    """Megabytes of valid columns, then one 15-byte address: refused as a whole (``address``)."""
    addresses = [bytes(15) + bytes([i % 256]) for i in range(rows)] + [bytes(15)]
    fields = {"v": 1, "t": "enriched", "src": "fuzz/big", "node": DIRECT_NODE, "at": 1,
              "cols": ["bytes", "remoteIP"], "data": [list(range(rows + 1)), addresses]}  # fmt: skip
    return Case("enriched:big_bad_tail", _pack(fields))
