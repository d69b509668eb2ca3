"""RAW cases: valid agent reports with known bytes, and the mutations only RAW has (rows, addresses, header).

Good RAW records are flows from a pod on the observer to a public address: each is kept, its ``out``
row carries the original counters and its ``in`` row the reply counters, so the stored bytes are known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.cases import (
    COUNTER,
    GENERIC_MUTATIONS,
    LOCAL_PODS,
    MUTATIONS,
    OBSERVER,
    PACKABLE_INT,
    PUBLIC,
    WRONG_TYPES,
    Case,
    Draft,
    msgpack_values,
    pack,
)


def good_raw_message(
    key: int, draw: Callable[[st.SearchStrategy[Any]], Any], *, max_rows: int = 12
) -> tuple[dict[str, Any], int, int]:
    """A valid RAW message map (unique by ``key``) and its kept records and bytes."""
    rows, total = [], 0
    for port in range(1, draw(st.integers(1, max_rows)) + 1):
        src, dst = draw(st.sampled_from(LOCAL_PODS)), draw(st.sampled_from(PUBLIC))
        counters = [draw(st.integers(1, 10**6)), draw(COUNTER), draw(st.integers(0, 10**6)), draw(COUNTER)]
        rows.append(
            [
                draw(st.sampled_from([6, 17])),
                2,
                0,
                src,
                dst,
                30000 + port,
                443,
                dst,
                src,
                443,
                30000 + port,
                *counters,
            ]
        )
        total += counters[1] + counters[3]
    start = 1_800_000_000 - 86400 + 60 * (key % 1000)
    fields = {
        "v": 1,
        "t": "raw",
        "node": OBSERVER,
        "boot": "fuzz",
        "start": start,
        "secs": 60,
        "seq": key,
        "chunk": 0,
        "chunks": 1,
        "rows": rows,
    }
    return fields, len(rows), total


@st.composite
def bad_raw(draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[Case]:
    """A few mutations of one valid RAW message."""
    base, _, _ = good_raw_message(draw(st.integers(0, 10**6)), draw, max_rows=4)
    data = pack(base)
    kinds = draw(st.lists(st.sampled_from(sorted(_RAW_MUTATIONS)), min_size=1, max_size=MUTATIONS))
    return [Case(f"raw:{kind}", _RAW_MUTATIONS[kind](base, data, draw)) for kind in kinds]


def _header_range(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name, value = draw(
        st.sampled_from(
            [
                ("start", -1),
                ("start", 1 << 32),
                ("secs", 0),
                ("secs", 1 << 16),
                ("seq", -5),
                ("chunk", 1),
                ("chunks", 0),
                ("node", ""),
                ("boot", ""),
                ("node", "n" * 254),
                ("boot", "b" * 65),
            ]
        )
    )
    return pack({**base, name: value})


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
    return pack({**base, "rows": rows})


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
    return pack({**base, "rows": rows})


_RAW_MUTATIONS: dict[str, Callable[[dict[str, Any], bytes, Any], bytes]] = {
    **GENERIC_MUTATIONS,
    "header_range": _header_range,
    "row": _bad_row,
    "address": _bad_address,
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
    return Case(draft.category, pack(fields), draft.records, draft.bytes)


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
    fields = {
        "v": 1,
        "t": "raw",
        "node": OBSERVER,
        "boot": "fuzz-big",
        "start": 1_800_000_000 - 7200,
        "secs": 60,
        "seq": key,
        "chunk": 0,
        "chunks": 1,
        "rows": rows,
    }
    return Case("raw:good_big", pack(fields), records, total)


def big_raw_bad_tail(records: int) -> Case:
    """Megabytes of valid rows, then one out-of-range row: refused as a whole (``schema``)."""
    rows, _ = _raw_rows(records)
    rows.append([*rows[-1][:5], 70000, *rows[-1][6:]])
    fields = {
        "v": 1,
        "t": "raw",
        "node": OBSERVER,
        "boot": "fuzz-big",
        "start": 1_800_000_000,
        "secs": 60,
        "seq": 0,
        "chunk": 0,
        "chunks": 1,
        "rows": rows,
    }
    return Case("raw:big_bad_tail", pack(fields))
