"""ENRICHED cases: valid rows with known bytes, the mutations only ENRICHED has, and rows the table refuses.

Good messages carry full or partial columns (the table has defaults) and sometimes top-level fields a
newer enricher might add; their rows have distinct identities, so every one of them is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from kubenetmon.shared import schema
from tests.fuzz.cases import (
    COUNTER,
    DIRECT_NODE,
    GENERIC_MUTATIONS,
    MUTATIONS,
    PACKABLE_INT,
    U64,
    WRONG_TYPES,
    Case,
    Draft,
    msgpack_values,
    pack,
)


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
    fields = {
        "v": 1,
        "t": "enriched",
        "src": source,
        "node": DIRECT_NODE,
        "at": draw(U64),
        "cols": names,
        "data": [values[n_] for n_ in names],
    }
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
        draft.category, pack({**draft.fields, "src": source, "data": data}), draft.records, draft.bytes
    )


@st.composite
def bad_enriched(draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[Case]:
    """A few mutations of one valid ENRICHED message."""
    base, _, _ = good_enriched_fields(draw(st.integers(0, 10**6)), draw, max_rows=3)
    data = pack(base)
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
    return pack({**base, "data": data_})


def _narrow_int(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name, value = draw(
        st.sampled_from(
            [
                ("intervalStartTime", 1 << 32),
                ("intervalSeconds", 0),
                ("intervalSeconds", 1 << 16),
                ("localIPv4", 1 << 32),
                ("remotePort", 1 << 16),
                ("ipFamily", 5),
            ]
        )
    )
    cols, data_ = [*base["cols"]], [*base["data"]]
    n = len(data_[0])
    if name in cols:
        data_[cols.index(name)] = [value] * n
    else:
        cols.append(name)
        data_.append([value] * n)
    return pack({**base, "cols": cols, "data": data_})


def _unknown_column(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name = draw(st.text(max_size=12).filter(lambda s: s not in schema.COLUMN_INDEX) | PACKABLE_INT)
    return pack({**base, "cols": [*base["cols"], name], "data": [*base["data"], [0] * len(base["data"][0])]})


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
        return pack({**base, "src": ""})
    else:
        return pack({**base, "at": draw(st.integers(-(1 << 63), -1))})
    return pack({**base, "cols": cols, "data": data_})


def _rejected_by_clickhouse(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    """Valid for the decoder, refused by the table: a ``direction`` outside its Enum."""
    cols, data_ = [*base["cols"]], [*base["data"]]
    column = list(data_[cols.index("direction")])
    column[draw(st.integers(0, len(column) - 1))] = draw(st.sampled_from(["sideways", "OUT", "", "both"]))
    data_[cols.index("direction")] = column
    return pack({**base, "data": data_})


_ENRICHED_MUTATIONS: dict[str, Callable[[dict[str, Any], bytes, Any], bytes]] = {
    **GENERIC_MUTATIONS,
    "column_value": _column_value,
    "narrow_int": _narrow_int,
    "unknown_column": _unknown_column,
    "shape": _shape,
}


@st.composite
def rejected_enriched(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Case:
    """Decodes, but the table refuses it: the writer must isolate it (``invalid_batch``)."""
    base, _, _ = good_enriched_fields(0, draw, max_rows=3)
    return Case("enriched:clickhouse_rejects", _rejected_by_clickhouse(base, b"", draw))


def big_enriched_bad_tail(rows: int) -> Case:
    """Megabytes of valid columns, then one 15-byte address: refused as a whole (``address``)."""
    addresses = [bytes(15) + bytes([i % 256]) for i in range(rows)] + [bytes(15)]
    fields = {
        "v": 1,
        "t": "enriched",
        "src": "fuzz/big",
        "node": DIRECT_NODE,
        "at": 1,
        "cols": ["bytes", "remoteIP"],
        "data": [list(range(rows + 1)), addresses],
    }
    return Case("enriched:big_bad_tail", pack(fields))
