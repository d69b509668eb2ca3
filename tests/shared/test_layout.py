"""ENRICHED v2: the dictionary-coded layout decodes to exactly the v1 values; forged layouts are refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetmon.shared import schema, spans
from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema import COLUMN_INDEX, COLUMN_NAMES, COLUMNS, EnrichedMessage
from kubenetmon.shared.spans import Spans

SAMPLES: dict[str, Any] = {
    "int": st.integers(0, (1 << 64) - 1),
    "str": st.sampled_from(["", "a", "default", "pod-7", "é" * 3]) | st.text(max_size=6),
    "bool": st.booleans(),
    "bytes16": st.binary(min_size=16, max_size=16),
    "map": st.sampled_from([{"crossZone": True}, {"crossZone": False}, {}]),
}
NARROW: dict[str, Any] = {
    "intervalStartTime": st.integers(0, (1 << 32) - 1),
    "intervalSeconds": st.integers(1, 0xFFFF),
    "localIPv4": st.integers(0, (1 << 32) - 1),
    "remoteIPv4": st.integers(0, (1 << 32) - 1),
    "localPort": st.integers(0, 0xFFFF),
    "remotePort": st.integers(0, 0xFFFF),
    "ipFamily": st.sampled_from([4, 6]),
}


def message(data: list[Any]) -> EnrichedMessage:
    return EnrichedMessage("node-a/b00t/1/3/0", "node-a", 123, list(COLUMN_NAMES), data)


@st.composite
def columns(draw: st.DrawFn) -> list[Any]:
    """Every column, as a list or as the labeler's spans (constants, twice, pairs), values repeating."""
    half = draw(st.integers(0, 40))
    out: list[Any] = []
    for c in COLUMNS:
        value = NARROW.get(c.name, SAMPLES[c.wire])
        shapes = ["list", "repeated", "twice", "pair"]
        shape = draw(
            st.sampled_from([*shapes, "flipped"] if c.wire == "int" and c.name not in NARROW else shapes)
        )
        if shape == "repeated":
            out.append(spans.repeated(draw(value), 2 * half))
        elif shape == "twice":
            out.append(spans.twice(draw(st.lists(value, min_size=half, max_size=half))))
        elif shape == "pair":
            first, second = (draw(st.lists(value, min_size=half, max_size=half)) for _ in range(2))
            out.append(Spans((first, 1), (second, 1)))
        elif (
            shape == "flipped"
        ):  # the labeler's flowId: the in rows' ids are the out rows' with a bit flipped
            first = draw(st.lists(value, min_size=half, max_size=half))
            out.append(Spans((first, 1), (spans.flipped(first, draw(st.integers(0, (1 << 64) - 1))), 1)))
        else:
            out.append(draw(st.lists(value, min_size=2 * half, max_size=2 * half)))
    return out


@settings(max_examples=80, deadline=None)
@given(data=columns())
def test_v2_decodes_to_exactly_what_v1_decodes_to(data: list[Any]) -> None:
    msg = message(data)
    v1, v2 = (schema.decode_enriched(schema.encode_enriched(msg, version=v)) for v in (1, 2))
    assert v2 == v1 and v2.data == [list(column) for column in data]
    assert msgpack.unpackb(schema.encode_enriched(msg))["v"] == 2


def test_a_column_shared_twice_and_across_columns_is_written_once() -> None:
    pods = [f"pod-{i:04d}" for i in range(100)]
    samples = {"int": 7, "str": "x", "bool": True, "bytes16": b"\x01" * 16, "map": {"crossZone": False}}
    data: list[Any] = [spans.twice([4 if c.name == "ipFamily" else samples[c.wire]] * 100) for c in COLUMNS]
    data[COLUMN_INDEX["localPod"]] = spans.twice(pods)
    data[COLUMN_INDEX["remotePod"]] = spans.twice(pods)
    data[COLUMN_INDEX["connectionFlags"]] = spans.twice([{"crossZone": i % 2 == 0} for i in range(100)])
    encoded = schema.encode_enriched(message(data))
    assert (
        encoded.count(b"pod-0042") == 1 and encoded.count(b"crossZone") == 1 + 2
    )  # the column's name, two maps
    back = schema.decode_enriched(encoded)
    assert back.data[COLUMN_INDEX["remotePod"]] == pods * 2
    flags = back.data[COLUMN_INDEX["connectionFlags"]]
    assert flags[:3] == [{"crossZone": True}, {"crossZone": False}, {"crossZone": True}]
    # the decoded columns are lists of their own, even where the wire shares one sequence
    assert len({id(column) for column in back.data}) == len(COLUMNS)
    # read-only callers may take the sequences themselves: the same values, fewer copies
    shared = schema.decode_enriched(encoded, share=True)
    assert [list(c) for c in shared.data] == [list(c) for c in back.data]
    columns = [list(c) for c in back.data]
    columns[COLUMN_INDEX["remotePod"]] = columns[COLUMN_INDEX["localPod"]]  # one list: one sequence
    plain = schema.decode_enriched(schema.encode_enriched(message(columns)), share=True)
    assert [list(c) for c in plain.data] == columns
    assert plain.data[COLUMN_INDEX["remotePod"]] is plain.data[COLUMN_INDEX["localPod"]]


def test_a_forged_flag_map_is_refused_when_sharing_too() -> None:
    samples = {"int": 7, "str": "x", "bool": True, "bytes16": b"\x01" * 16, "map": {"crossZone": False}}
    data: list[Any] = [[4 if c.name == "ipFamily" else samples[c.wire]] * 3 for c in COLUMNS]
    obj = msgpack.unpackb(schema.encode_enriched(message(data)))
    for forged in ({"crossZone": 1}, {1: True}, {"crossZone": None}):
        obj["dict"] = [forged]
        for share in (False, True):
            with pytest.raises(DecodeError):
                schema.decode_enriched(msgpack.packb(obj), share=share)


def test_a_flipped_column_is_sent_as_its_base_and_mask() -> None:
    ids = [(1 << 64) - 1 - i for i in range(50)]
    data: list[Any] = [spans.twice([4 if c.name == "ipFamily" else 7] * 50) if c.wire == "int" else None
                       for c in COLUMNS]  # fmt: skip
    samples = {"str": "x", "bool": True, "bytes16": b"\x01" * 16, "map": {"crossZone": False}}
    data = [
        d if d is not None else spans.repeated(samples[c.wire], 100)
        for c, d in zip(COLUMNS, data, strict=True)
    ]
    data[COLUMN_INDEX["flowId"]] = Spans((ids, 1), (spans.flipped(ids, schema.IN_FLIP), 1))
    encoded = schema.encode_enriched(message(data))
    obj = msgpack.unpackb(encoded)
    assert {"xor": [obj["seqs"].index(ids), schema.IN_FLIP]} in obj["seqs"]
    flow_ids = schema.decode_enriched(encoded).data[COLUMN_INDEX["flowId"]]
    assert flow_ids == ids + [i ^ 1 for i in ids]


def _v2(rows: int = 2) -> dict[str, Any]:
    samples = {"int": 7, "str": "x", "bool": True, "bytes16": b"\x01" * 16, "map": {"crossZone": False}}
    plain = [[4 if c.name == "ipFamily" else samples[c.wire]] * rows for c in COLUMNS]
    obj: dict[str, Any] = msgpack.unpackb(schema.encode_enriched(message(plain)))
    return obj


def _refused(obj: dict[str, Any], reason: str = "schema") -> DecodeError:
    with pytest.raises(DecodeError) as err:
        schema.decode_enriched(msgpack.packb(obj, use_bin_type=True))
    assert err.value.reason == reason
    return err.value


CODED = COLUMN_INDEX["connectionFlags"]  # a coded column
PLAIN = COLUMN_INDEX["bytes"]  # a plain one


@pytest.mark.parametrize(
    "forge",
    [
        lambda o: o.__setitem__("dict", {"a": 1}),
        lambda o: o.__setitem__("seqs", "x"),
        lambda o: o.pop("seqs"),
        lambda o: o["seqs"].append(7),
        lambda o: o["data"].__setitem__(PLAIN, [0]),  # odd runs
        lambda o: o["data"].__setitem__(PLAIN, [99, 1]),  # no such sequence
        lambda o: o["data"].__setitem__(PLAIN, [0, -1]),  # a negative count
        lambda o: o["data"].__setitem__(PLAIN, [True, 1]),  # a bool is no index
        lambda o: o["data"].__setitem__(PLAIN, ["0", 1]),
        lambda o: o["data"].__setitem__(PLAIN, {"0": 1}),
        lambda o: o["data"].__setitem__(PLAIN, [*o["data"][PLAIN], *o["data"][PLAIN]]),  # twice the rows
        lambda o: o["data"].__setitem__(CODED, [len(o["seqs"]), 1]) or o["seqs"].append([99]),  # dict index
        lambda o: o["data"].__setitem__(CODED, [len(o["seqs"]), 1]) or o["seqs"].append([-1, 0]),
        lambda o: o["data"].__setitem__(CODED, [len(o["seqs"]), 1]) or o["seqs"].append(["x", "x"]),
        lambda o: o["data"].__setitem__(CODED, [len(o["seqs"]), 1]) or o["seqs"].append([0.0, 0]),
        lambda o: o["dict"].__setitem__(0, 17),  # a map column's value is no map
        *(
            (
                lambda o, forged=forged: (
                    o["data"].__setitem__(PLAIN, [len(o["seqs"]), 1]) or o["seqs"].append(forged)
                )
            )
            for forged in (
                {"xor": [0, 1], "and": 1},
                {"xor": [0]},
                {"xor": [0, -1]},
                {"xor": [99, 1]},
                {"xor": [-1, 1]},
                {"xor": "0"},
                {"xor": [True, 1]},
                {"not": [0, 1]},
            )
        ),
        # derived from a derived sequence, or from one that is not of integers
        lambda o: (
            o["data"].__setitem__(PLAIN, [len(o["seqs"]) + 1, 1])
            or o["seqs"].extend([{"xor": [0, 1]}, {"xor": [len(o["seqs"]), 1]}])
        ),
        lambda o: (
            o["data"].__setitem__(PLAIN, [len(o["seqs"]) + 1, 1])
            or o["seqs"].extend([["a", "b"], {"xor": [len(o["seqs"]), 1]}])
        ),
    ],
)
def test_forged_layouts_are_refused(forge: Any) -> None:
    obj = _v2()
    forge(obj)
    _refused(obj)


def test_a_bad_address_is_an_address_problem() -> None:
    obj = _v2()
    obj["seqs"][obj["data"][COLUMN_INDEX["remoteIP"]][0]] = [b"\x01" * 15] * 2
    _refused(obj, "address")


def test_a_few_bytes_never_unfold_into_gigabytes() -> None:
    obj = _v2()
    obj["data"] = [[0, (1 << 62)] for _ in COLUMNS]
    obj["seqs"][0] = [0]
    err = _refused(obj)
    assert "exceed" in err.detail


def test_an_unknown_version_is_refused_and_v1_still_decodes() -> None:
    obj = _v2()
    obj["v"] = 3
    _refused(obj, "version")
    msg = message([[4 if c.name == "ipFamily" else 0] if c.wire == "int" else [""] for c in COLUMNS])
    msg.data[COLUMN_INDEX["localIP"]][0] = bytes(16)
    msg.data[COLUMN_INDEX["crossZone"]][0] = False
    msg.data[COLUMN_INDEX["connectionFlags"]][0] = {}
    msg.data[COLUMN_INDEX["intervalSeconds"]][0] = 60
    msg.data[COLUMN_INDEX["remoteIP"]][0] = bytes(16)
    v1 = schema.encode_enriched(msg, version=1)
    assert msgpack.unpackb(v1)["v"] == 1
    assert schema.decode_enriched(v1) == msg
