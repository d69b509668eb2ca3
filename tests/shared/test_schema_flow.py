"""The flow tuple and the records built on it: one definition, named-tuple behaviour, domains in order."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from typing import Annotated

import pytest

from kubenetmon.shared import schema
from kubenetmon.shared.schema import AF_INET, FLOW_FIELDS, FlowTuple, RawRow
from kubenetmon.shared.schema.domains import ADDRESS, U8, U16, UINT64, Ints
from kubenetmon.shared.schema.flow import Record

ROW = RawRow(
    6, AF_INET, 0, b"\n\0\0\1", b"\n\0\0\2", 40000, 80, b"\n\0\0\2", b"\n\0\0\1", 80, 40000, 1, 2, 3, 4
)


class Keyed(FlowTuple):
    __slots__ = ()
    id: int
    label: Annotated[int, U8]


def test_a_row_is_the_flow_tuple_then_the_counters() -> None:
    assert RawRow._fields[:FLOW_FIELDS] == FlowTuple._fields and FLOW_FIELDS == 11
    assert RawRow._fields[FLOW_FIELDS:] == ("orig_packets", "orig_bytes", "reply_packets", "reply_bytes")
    assert FlowTuple._fields[:3] == ("proto", "family", "zone")  # the RAW wire order
    assert ROW[:FLOW_FIELDS] == FlowTuple(*ROW[:FLOW_FIELDS]) and isinstance(ROW, FlowTuple)


def test_a_record_behaves_like_a_named_tuple() -> None:
    assert repr(ROW).startswith("RawRow(proto=6, family=2, zone=0, orig_src=b'\\n\\x00\\x00\\x01'")
    assert ROW._replace(zone=7).zone == 7 and ROW.zone == 0
    assert RawRow._make(list(ROW)) == ROW and type(RawRow._make(list(ROW))) is RawRow
    assert RawRow(**ROW._asdict()) == ROW
    assert pickle.loads(pickle.dumps(ROW)) == ROW
    assert ROW == tuple(ROW) and hash(ROW) == hash(tuple(ROW))
    with pytest.raises(TypeError):
        RawRow(*ROW[:14])
    with pytest.raises(AttributeError):
        ROW.extra = 1  # type: ignore[attr-defined]


def test_a_subclass_adds_fields_after_the_flow_tuple() -> None:
    keyed = Keyed(*ROW[:FLOW_FIELDS], 9, 3)
    assert Keyed._fields == (*FlowTuple._fields, "id", "label")
    assert (keyed.proto, keyed.reply_dport, keyed.id, keyed.label) == (6, 40000, 9, 3)


def test_a_record_without_slots_is_refused() -> None:
    with pytest.raises(TypeError, match="__slots__"):

        class Loose(Record):  # no __slots__: every instance would carry a dict
            x: int


def test_domains_come_in_field_order_from_the_declarations() -> None:
    domains = RawRow.domains()
    assert domains[:3] == (U8, U8, U16) and domains[3] is ADDRESS and domains[11:] == (UINT64,) * 4
    assert Keyed.domains()[FLOW_FIELDS:] == (None, U8)
    assert [d.code for d in FlowTuple.domains()] == ["B", "B", "H", *["16s", "16s", "H", "H"] * 2]
    assert Ints(1, 0xFFFF).code == "" and Ints(0, 0xFFFF).code == "H"


def test_every_re_exported_name_resolves() -> None:
    assert all(getattr(schema, name) is not None for name in schema.__all__)
    assert schema.RawRow is RawRow and "decode_raw" in dir(schema)
    with pytest.raises(AttributeError):
        _ = schema.not_a_name


def test_the_flow_tuple_loads_without_the_codecs() -> None:
    # the conntrack dump tool imports the flow tuple; msgpack, xxhash and the codecs stay unloaded
    code = "import sys, kubenetmon.shared.schema.flow; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "kubenetmon.shared.schema.flow" in loaded
    assert not {"msgpack", "xxhash", "kubenetmon.shared.schema.raw"} & set(ast.literal_eval(loaded))
