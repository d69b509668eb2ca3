"""RAW messages as columns: what ``decode_raw`` hands the enricher, and the row identity it hashes."""

from __future__ import annotations

import ipaddress
from dataclasses import FrozenInstanceError

import pytest

from kubenetmon.shared import schema
from kubenetmon.shared.schema import AF_INET, AF_INET6, RawMessage, RawRow, decode_raw, encode_raw

MSG_ID = "node-a/b00t/1795000000/3/0"


def packed(*texts: str) -> list[bytes]:
    return [ipaddress.ip_address(t).packed for t in texts]


V4 = RawRow(6, AF_INET, 0, *packed("10.0.0.1", "10.96.0.10"), 40000, 80, *packed("10.3.0.5", "10.0.0.1"),
            8080, 40000, 10, 11, 12, 13)  # fmt: skip
V6 = RawRow(17, AF_INET6, 7, *packed("fd00::1", "fd00:96::a"), 40000, 53, *packed("fd00:3::5", "fd00::1"),
            5353, 40000, 1, 2, 3, 4)  # fmt: skip


def message(rows: list[RawRow]) -> RawMessage:
    return RawMessage("node-a", "b00t", 1_795_000_000, 60, 3, 0, 1, rows)


def test_flow_ids_are_pinned_so_they_stay_the_same_everywhere() -> None:
    # XXH3-64 of the packed flow fields, seeded with XXH3-64 of the message id: no process-local state.
    assert schema.flow_id(MSG_ID, V4, "out") == 13513250901902117547
    assert schema.flow_id(MSG_ID, V4, "in") == 13513250901902117546
    assert schema.flow_id(MSG_ID, V6, "out") == 10176703174572408664


def test_flow_ids_ignore_counters_and_depend_on_everything_else() -> None:
    base = schema.flow_id(MSG_ID, V4, "out")
    assert schema.flow_id(MSG_ID, V4._replace(orig_bytes=1, reply_packets=99), "out") == base
    changed = {
        schema.flow_id(MSG_ID, V4._replace(**{name: value}), "out")
        for name, value in [
            *[("proto", 17), ("zone", 1), ("orig_sport", 1), ("reply_dport", 1)],
            *[("orig_dst", packed("10.96.0.11")[0]), ("reply_src", packed("10.3.0.6")[0])],
        ]
    }
    assert base not in changed and len(changed) == 6
    assert schema.flow_id("other/b00t/1795000000/3/0", V4, "out") != base
    odd = schema.flow_id(MSG_ID, V4, "sideways")  # never written by the enricher, still its own id
    assert odd not in {base, schema.flow_id(MSG_ID, V4, "in")} and odd == schema.flow_id(
        MSG_ID, V4, "sideways"
    )


def test_batch_flow_ids_equal_the_per_row_definition() -> None:
    msg = decode_raw(encode_raw(message([V4, V6, V4._replace(orig_sport=1)])))
    outs = schema.flow_ids(msg.msg_id, msg.identities())
    assert outs == [schema.flow_id(msg.msg_id, row, "out") for row in msg.rows]
    assert [o ^ schema.IN_FLIP for o in outs] == [schema.flow_id(msg.msg_id, row, "in") for row in msg.rows]
    assert schema.identities(message(msg.rows).columns()) == msg.identities()


def test_a_decoded_message_is_columns_with_rows_built_on_demand() -> None:
    original = message([V4, V6, V6._replace(zone=65535)])
    decoded = decode_raw(encode_raw(original))
    assert decoded.columns() == [list(column) for column in zip(*original.rows, strict=True)]
    assert decoded.rows == original.rows and all(type(row) is RawRow for row in decoded.rows)
    assert decoded == original and decoded.rows[1].orig_src == V6.orig_src
    assert "rows=[RawRow(proto=6" in repr(decoded)
    with pytest.raises(FrozenInstanceError):
        decoded.node = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(decoded)


def test_an_empty_message_has_empty_columns() -> None:
    decoded = decode_raw(encode_raw(message([])))
    assert decoded.rows == [] and decoded.columns() == [()] * schema.RAW_ROW_FIELDS
    assert decoded.identities() == [] and message([]).columns() == [()] * schema.RAW_ROW_FIELDS
