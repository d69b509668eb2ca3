"""Span columns: the ENRICHED encoder's shortcut must write exactly what msgpack writes."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetmon.shared import schema, spans
from kubenetmon.shared.spans import Spans

values = st.one_of(
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.text(max_size=12),
    st.binary(min_size=16, max_size=16),
    st.booleans(),
    st.sampled_from([{"crossZone": True}, {"crossZone": False}]),
)
# lengths around the msgpack array header sizes (fixarray < 16, array16 < 65536)
lengths = st.sampled_from([0, 1, 2, 7, 8, 15, 16, 17, 100, 32767, 32768, 40000])


def packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), length=lengths)
def test_a_twice_column_packs_as_msgpack_packs_its_values(data: st.DataObject, length: int) -> None:
    half = data.draw(st.lists(values, min_size=min(length, 3), max_size=min(length, 3)))
    half = (half * (length // max(len(half), 1) + 1))[:length] if half else []
    column = spans.twice(half)
    assert column == half + half and column.spans == ((half, 2),)
    assert b"".join(spans.pack_columns([column], packer())) == msgpack.packb(half + half, use_bin_type=True)


@settings(max_examples=40, deadline=None)
@given(value=values, times=lengths, more=st.integers(0, 70000))
def test_repeated_and_mixed_spans_pack_as_msgpack(value: Any, times: int, more: int) -> None:
    column = spans.repeated(value, times)
    assert column == [value] * times
    assert b"".join(spans.pack_columns([column], packer())) == msgpack.packb(
        [value] * times, use_bin_type=True
    )
    mixed = Spans((("out",), more), (("in",), times), (("a", 1, b"x"), 3))
    plain = ["out"] * more + ["in"] * times + ["a", 1, b"x"] * 3
    assert mixed == plain
    assert b"".join(spans.pack_columns([mixed], packer())) == msgpack.packb(plain, use_bin_type=True)


def test_spans_read_like_a_list_and_refuse_to_pass_for_one() -> None:
    column = Spans((("a", "b"), 2), (("c",), 3))
    assert len(column) == 7 and column == ["a", "b", "a", "b", "c", "c", "c"] == column
    assert column[1] == "b" and column[-1] == "c" and column[1:4] == ["b", "a", "b"]
    assert list(column) == column.values() and column == tuple(column) and column != ["a"]
    assert column == Spans((("a", "b", "a", "b"), 1), (("c", "c", "c"), 1))
    with pytest.raises(AttributeError):
        column.append("d")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        msgpack.packb(column)  # not a list: a plain encoder cannot mistake it for an empty one
    with pytest.raises(TypeError):
        hash(column)


def test_an_enriched_v1_message_with_spans_is_byte_for_byte_the_plain_one() -> None:
    rows = 20
    data: list[list[Any]] = []
    for c in schema.COLUMNS:
        sample = {"int": 7, "str": "x", "bool": True, "bytes16": b"\x01" * 16, "map": {"crossZone": False}}
        value = 4 if c.name == "ipFamily" else sample[c.wire]
        data.append(spans.repeated(value, rows) if c.wire != "int" else spans.twice([value] * (rows // 2)))
    data[schema.COLUMN_INDEX["direction"]] = Spans((("out",), rows // 2), (("in",), rows // 2))
    data[schema.COLUMN_INDEX["bytes"]] = list(range(rows))
    msg = schema.EnrichedMessage("n/b/1/0/0", "n", 5, list(schema.COLUMN_NAMES), data)
    plain = {
        "v": 1,
        "t": "enriched",
        "src": "n/b/1/0/0",
        "node": "n",
        "at": 5,
        "cols": list(schema.COLUMN_NAMES),
        "data": [list(column) for column in data],
    }
    encoded = schema.encode_enriched(msg, version=1)
    assert encoded == msgpack.packb(plain, use_bin_type=True)
    assert schema.decode_enriched(encoded).data == plain["data"]
    v2 = schema.encode_enriched(msg)  # the same values, each distinct value and run once
    assert schema.decode_enriched(v2).data == plain["data"] and len(v2) < len(encoded) / 3
