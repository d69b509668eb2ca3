"""The wire contract: RAW and ENRICHED round-trips (IPv4 and IPv6), strict validation, and fuzzing.

The fuzz properties are the contract consumers rely on: whatever bytes arrive, decoding either returns
a valid message or raises ``DecodeError`` (carrying subject and bytes), never anything else.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenetmon.shared import schema
from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema import (
    AF_INET,
    AF_INET6,
    COLUMN_NAMES,
    COLUMNS,
    EnrichedMessage,
    RawMessage,
    RawRow,
    decode_enriched,
    decode_raw,
    encode_enriched,
    encode_raw,
)

V4 = [ipaddress.ip_address(a).packed for a in ("10.0.0.1", "10.96.0.10", "10.3.0.5", "10.0.0.2")]
V6 = [ipaddress.ip_address(a).packed for a in ("fd00::1", "fd00:96::a", "fd00:3::5", "2001:db8::2")]


def raw_row(family: int = AF_INET, **changes: Any) -> RawRow:
    a = V4 if family == AF_INET else V6
    row = RawRow(6, family, 0, a[0], a[1], 40000, 80, a[2], a[0], 8080, 40000, 10, 11, 12, 13)
    return row._replace(**changes)


def raw_message(rows: list[RawRow]) -> RawMessage:
    return RawMessage(
        node="node-a", boot="b00t", start=1_795_000_000, seconds=60, seq=3, chunk=0, chunks=1, rows=rows
    )


def enriched_message(rows: int = 2) -> EnrichedMessage:
    samples = {"int": 7, "str": "x", "bool": True, "bytes16": V6[1], "map": {"crossZone": False}}
    data = [[4 if c.name == "ipFamily" else samples[c.wire]] * rows for c in COLUMNS]
    return EnrichedMessage(
        source="node-a/b00t/1/3/0", node="node-a", enriched_at=123, columns=list(COLUMN_NAMES), data=data
    )


@pytest.mark.parametrize("version", [1, 2])
def test_raw_round_trip_ipv4_and_ipv6(version: int) -> None:
    msg = raw_message([raw_row(AF_INET), raw_row(AF_INET6, proto=17), raw_row(AF_INET6, zone=65535)])
    back = decode_raw(encode_raw(msg, version=version), subject="s")
    assert back == msg
    assert back.msg_id == "node-a/b00t/1795000000/3/0"
    assert [len(r.orig_src) for r in back.rows] == [4, 16, 16]


@pytest.mark.parametrize("version", [1, 2])
def test_enriched_round_trip(version: int) -> None:
    msg = enriched_message()
    back = decode_enriched(encode_enriched(msg, version=version))
    assert back == msg
    assert back.row_count == 2
    assert back.msg_id == "enriched/node-a/b00t/1/3/0"


@pytest.mark.parametrize("version", [1, 2])
def test_counters_up_to_64_bits_survive(version: int) -> None:
    top = (1 << 64) - 1
    msg = raw_message([raw_row(orig_bytes=top, reply_packets=top)])
    assert decode_raw(encode_raw(msg, version=version)).rows[0].orig_bytes == top


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"orig_sport": 65536}, "schema"),
        ({"reply_dport": -1}, "schema"),
        ({"orig_bytes": -5}, "schema"),
        ({"proto": 256}, "schema"),
        ({"zone": 70000}, "schema"),
        ({"orig_src": b"\x01\x02\x03"}, "address"),
        ({"reply_dst": V6[0]}, "address"),  # a 16-byte address in an IPv4 row
        ({"family": 7}, "address"),
        ({"orig_packets": True}, "schema"),  # bool is not an integer on the wire contract
    ],
)
def test_raw_rows_out_of_range_are_refused(change: dict[str, Any], reason: str) -> None:
    # v1 writes whatever it is given; v2 cannot carry a negative or a bool (test_raw_layout forges it)
    with pytest.raises(DecodeError) as err:
        decode_raw(encode_raw(raw_message([raw_row(**change)]), version=1), subject="subj")
    assert err.value.reason == reason
    assert err.value.subject == "subj"
    assert err.value.data


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"orig_sport": 65536}, "schema"),
        ({"proto": 256}, "schema"),
        ({"zone": 70000}, "schema"),
        ({"orig_src": b"\x01\x02\x03"}, "address"),
        ({"reply_dst": V6[0]}, "address"),  # a 16-byte address in an IPv4 row
        ({"family": 7}, "address"),
    ],
)
def test_raw_v2_rows_out_of_range_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_raw(encode_raw(raw_message([raw_row(), raw_row(**change)])), subject="subj")
    assert err.value.reason == reason
    assert err.value.subject == "subj"
    assert err.value.data


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"v": 3}, "version"),
        ({"v": 0}, "version"),
        ({"v": "1"}, "schema"),
        ({"t": "enriched"}, "schema"),
        ({"node": ""}, "schema"),
        ({"secs": 0}, "schema"),
        ({"chunk": 1, "chunks": 1}, "schema"),
        ({"start": -1}, "schema"),
        ({"start": 1 << 40}, "schema"),  # not a time ClickHouse can store
        ({"rows": {}}, "schema"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_raw_headers_are_validated(header: dict[str, Any], reason: str, version: int) -> None:
    obj = msgpack.unpackb(encode_raw(raw_message([raw_row()]), version=version))
    obj.update(header)
    with pytest.raises(DecodeError) as err:
        decode_raw(msgpack.packb(obj, use_bin_type=True))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("localIPv4", 1 << 32, "address"),
        ("remoteIPv4", -1, "address"),
        ("localPort", 65536, "schema"),
        ("remotePort", -1, "schema"),
        ("ipFamily", 5, "schema"),
        ("localIP", b"\x00" * 4, "address"),
        ("bytes", -1, "schema"),
        ("intervalSeconds", 0, "schema"),
        ("intervalStartTime", 1 << 33, "schema"),
        ("direction", 3, "schema"),
        ("connectionFlags", {"crossZone": 1}, "schema"),
        ("crossZone", 0, "schema"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_enriched_columns_are_validated(column: str, value: object, reason: str, version: int) -> None:
    msg = enriched_message(rows=1)
    msg.data[COLUMN_NAMES.index(column)][0] = value
    with pytest.raises(DecodeError) as err:
        decode_enriched(encode_enriched(msg, version=version))
    assert err.value.reason == reason


@pytest.mark.parametrize("version", [1, 2])
def test_enriched_structure_is_validated(version: int) -> None:
    msg = enriched_message()
    cases = [
        EnrichedMessage(msg.source, msg.node, msg.enriched_at, [*msg.columns, "extra"], [*msg.data, [1, 2]]),
        EnrichedMessage(msg.source, msg.node, msg.enriched_at, msg.columns[:2], msg.data[:3]),
        EnrichedMessage(
            msg.source, msg.node, msg.enriched_at, msg.columns[:2], [msg.data[0], msg.data[1][:1]]
        ),
        EnrichedMessage(msg.source, msg.node, msg.enriched_at, [msg.columns[0]] * 2, msg.data[:2]),
        EnrichedMessage("", msg.node, msg.enriched_at, msg.columns, msg.data),
    ]
    for bad in cases:
        with pytest.raises(DecodeError):
            decode_enriched(encode_enriched(bad, version=version))


def test_oversized_payload_is_refused_before_unpacking() -> None:
    data = encode_raw(raw_message([raw_row()] * 100))
    with pytest.raises(DecodeError) as err:
        decode_raw(data, max_bytes=len(data) - 1)
    assert err.value.reason == "oversized"


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1v\x01" + b"junk", b"\xdd" + b"\xff" * 4]
)
def test_garbage_is_malformed(data: bytes) -> None:
    for decode in (decode_raw, decode_enriched):
        with pytest.raises(DecodeError):
            decode(data)


# ---- fuzzing ------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_decode_error(decode: Any, data: bytes) -> None:
    try:
        decode(data, subject="fuzz")
    except DecodeError as exc:
        assert exc.subject == "fuzz"
        assert exc.reason in {"malformed", "version", "oversized", "schema", "address"}


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    _decode_or_decode_error(decode_raw, data)
    _decode_or_decode_error(decode_enriched, data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(data=st.data())
def test_mutated_raw_messages_only_raise_decode_error(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([1, 2]))
    obj = msgpack.unpackb(encode_raw(raw_message([raw_row(), raw_row(AF_INET6)]), version=version))
    _mutate(data, obj)
    _decode_or_decode_error(decode_raw, msgpack.packb(obj, use_bin_type=True))


@FUZZ
@given(data=st.data())
def test_mutated_enriched_messages_only_raise_decode_error(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([1, 2]))
    obj = msgpack.unpackb(encode_enriched(enriched_message(), version=version))
    _mutate(data, obj)
    _decode_or_decode_error(decode_enriched, msgpack.packb(obj, use_bin_type=True))


@FUZZ
@given(data=st.data())
def test_truncated_or_flipped_bytes_only_raise_decode_error(data: st.DataObject) -> None:
    for encoded, decode in (
        (encode_raw(raw_message([raw_row()]), version=1), decode_raw),
        (encode_raw(raw_message([raw_row(), raw_row(AF_INET6)])), decode_raw),
        (encode_enriched(enriched_message()), decode_enriched),
    ):
        cut = data.draw(st.integers(0, len(encoded)))
        pos = data.draw(st.integers(0, len(encoded) - 1))
        flipped = bytearray(encoded)
        flipped[pos] ^= data.draw(st.integers(1, 255))
        _decode_or_decode_error(decode, encoded[:cut])
        _decode_or_decode_error(decode, bytes(flipped))


def _mutate(data: st.DataObject, obj: dict[str, Any]) -> None:
    """Replace one value somewhere in the message (a header field, a row, a cell) with anything."""
    key: Any = data.draw(st.sampled_from(sorted(obj)))
    target: Any = obj
    while isinstance(target[key], list) and target[key] and data.draw(st.booleans()):
        target = target[key]
        key = data.draw(st.integers(0, len(target) - 1))
    if data.draw(st.booleans()):
        target[key] = data.draw(msgpack_values)
    elif isinstance(target, dict):
        del target[key]
    else:
        target.pop(key)


def test_flow_id_is_stable_and_label_free() -> None:
    row = raw_row()
    assert schema.flow_id("m", row, "out") == schema.flow_id("m", row, "out")
    assert schema.flow_id("m", row, "out") != schema.flow_id("m", row, "in")
    assert schema.flow_id("m", row, "out") != schema.flow_id("m", row._replace(orig_sport=1), "out")
    assert 0 <= schema.flow_id("m", row, "out") < 1 << 64


@FUZZ
@given(data=st.data())
def test_fast_row_validation_agrees_with_the_precise_one(data: st.DataObject) -> None:
    rows: list[Any] = [list(raw_row()), list(raw_row(AF_INET6))]
    row = data.draw(st.sampled_from(rows))
    row[data.draw(st.integers(0, len(row) - 1))] = data.draw(msgpack_values)
    try:
        for i, r in enumerate(rows):
            schema._check_row(r, i, subject="", data=b"")
        precise = True
    except DecodeError:
        precise = False
    assert schema._rows_valid(rows) == precise


@FUZZ
@given(data=st.data(), column=st.sampled_from(COLUMNS))
def test_fast_column_validation_agrees_with_the_precise_one(data: st.DataObject, column: Any) -> None:
    good = enriched_message(rows=1).data[COLUMN_NAMES.index(column.name)][0]
    edges = st.sampled_from(
        [0, 1, 4, 6, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, -1, b"x" * 16, True]
    )
    values = data.draw(st.lists(st.one_of(st.just(good), edges, msgpack_values), min_size=1, max_size=5))
    precise = all(schema._COLUMN_CHECK[column.name](v) for v in values)
    assert schema._column_valid(column.name, column.wire, values) == precise
