"""RAW v2: the byte-plane column layout decodes to exactly the v1 rows; forged layouts are refused."""

from __future__ import annotations

import ipaddress
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import (
    AF_INET,
    AF_INET6,
    MAX_MESSAGE_BYTES,
    RAW_ROW_FIELDS,
    RAW_VERSION,
    RawMessage,
    RawRow,
    decode_raw,
    encode_raw,
    planes,
)

U64 = (1 << 64) - 1
V4 = [ipaddress.ip_address(a).packed for a in ("10.0.0.1", "10.96.0.10", "10.3.0.5", "0.0.0.0")]
V6 = [ipaddress.ip_address(a).packed for a in ("fd00::1", "fd00:96::a", "::", "2001:db8::2")]


@st.composite
def rows(draw: st.DrawFn) -> RawRow:
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    size = 4 if family == AF_INET else 16
    # a few known addresses (they repeat, as a node's do) or any bytes of the family's length
    address = st.sampled_from(V4 if family == AF_INET else V6) | st.binary(min_size=size, max_size=size)
    port = st.integers(0, 0xFFFF)
    counter = st.sampled_from([0, 1, 255, 256, 65535, 65536, U64]) | st.integers(0, U64)
    return RawRow(
        draw(st.integers(0, 255)), family, draw(st.integers(0, 0xFFFF)),
        draw(address), draw(address), draw(port), draw(port),
        draw(address), draw(address), draw(port), draw(port),
        draw(counter), draw(counter), draw(counter), draw(counter),
    )  # fmt: skip


def message(rows: list[RawRow], **kw: Any) -> RawMessage:
    return RawMessage("node-a", "b00t", 1_795_000_020, 60, 3, 0, 1, rows, **kw)


@settings(max_examples=150, deadline=None)
@given(st.lists(rows(), max_size=40))
def test_v2_decodes_to_exactly_what_v1_decodes_to(data: list[RawRow]) -> None:
    msg = message(
        data,
        ledger=Ledger(1, 2, len(data), 3, 4, 5, 0, 0, -1, 0, 1),
        owners={0: "uid"} if data else None,
        names={data[0].orig_dst: "db.example.com"} if data else None,
    )
    v1, v2 = (decode_raw(encode_raw(msg, version=v)) for v in (1, 2))
    assert v2 == v1 == msg
    assert v2.identities() == v1.identities()
    assert [list(c) for c in v2.columns()] == [list(c) for c in v1.columns()]
    assert msgpack.unpackb(encode_raw(msg))["v"] == RAW_VERSION == 2


def test_v2_writes_one_binary_a_field_and_the_narrowest_width() -> None:
    row = RawRow(6, AF_INET, 0, V4[0], V4[1], 40000, 80, V4[1], V4[0], 80, 40000, 1, 300, 70000, U64)
    body = msgpack.unpackb(encode_raw(message([row, row._replace(orig_sport=40001)])))
    assert "rows" not in body and body["n"] == 2 and len(body["cols"]) == RAW_ROW_FIELDS
    widths = {RawRow._fields[at]: c[0] for at, c in enumerate(body["cols"]) if type(c) is list}
    assert widths == {
        "proto": 1, "family": 1, "zone": 1, "orig_sport": 2, "orig_dport": 1, "reply_sport": 1,
        "reply_dport": 2, "orig_packets": 1, "orig_bytes": 2, "reply_packets": 3, "reply_bytes": 8,
    }  # fmt: skip
    assert body["cols"][RawRow._fields.index("orig_sport")][1] == bytes([0x40, 0x41, 0x9C, 0x9C])  # planes
    assert body["cols"][RawRow._fields.index("orig_src")] == V4[0] * 2


def test_v2_is_smaller_than_v1() -> None:
    data = [
        RawRow(
            6, AF_INET, 0, V4[0], V4[1], 30000 + i, 443, V4[1], V4[0], 443, 30000 + i, i, 60 * i, i, 90 * i
        )
        for i in range(500)
    ]
    v1, v2 = (len(encode_raw(message(data), version=v)) for v in (1, 2))
    assert v2 < 0.75 * v1


def test_mixed_families_are_cut_by_each_rows_family() -> None:
    a = RawRow(6, AF_INET, 0, V4[0], V4[1], 1, 2, V4[1], V4[0], 2, 1, 1, 2, 3, 4)
    b = RawRow(17, AF_INET6, 7, V6[0], V6[1], 1, 2, V6[1], V6[0], 2, 1, 1, 2, 3, 4)
    msg = message([a, b, a, b, b])
    assert decode_raw(encode_raw(msg)) == msg


def test_an_empty_report_round_trips() -> None:
    msg = message([])
    assert decode_raw(encode_raw(msg)) == msg
    assert decode_raw(encode_raw(msg)).rows == []


def test_the_encoder_refuses_what_no_width_holds() -> None:
    row = RawRow(6, AF_INET, 0, V4[0], V4[1], 1, 2, V4[1], V4[0], 2, 1, 1, 2, 3, 4)
    with pytest.raises((ValueError, OverflowError)):
        encode_raw(message([row._replace(orig_bytes=1 << 64)]))
    with pytest.raises((ValueError, OverflowError)):
        encode_raw(message([row._replace(orig_bytes=-1)]))
    with pytest.raises(ValueError):
        encode_raw(message([row]), version=3)


# ---- forged layouts -----------------------------------------------------------------------------

ROW4 = RawRow(6, AF_INET, 0, V4[0], V4[1], 40000, 80, V4[1], V4[0], 80, 40000, 10, 11, 12, 13)
ROW6 = RawRow(17, AF_INET6, 0, V6[0], V6[1], 40000, 53, V6[1], V6[0], 53, 40000, 1, 2, 3, 4)
FIELD = {name: at for at, name in enumerate(RawRow._fields)}


def body(rows: list[RawRow] | None = None) -> dict[str, Any]:
    return dict(msgpack.unpackb(encode_raw(message([ROW4, ROW4, ROW6] if rows is None else rows))))


def col(name: str, value: Any) -> Any:
    def forge(b: dict[str, Any]) -> None:
        b["cols"][FIELD[name]] = value

    return forge


def set_(key: str, value: Any) -> Any:
    def forge(b: dict[str, Any]) -> None:
        b[key] = value

    return forge


def drop(key: str) -> Any:
    def forge(b: dict[str, Any]) -> None:
        del b[key]

    return forge


FORGED: list[tuple[str, Any, str]] = [
    ("no n", drop("n"), "schema"),
    ("no cols", drop("cols"), "schema"),
    ("n not an int", set_("n", "3"), "schema"),
    ("n a bool", set_("n", True), "schema"),
    ("n negative", set_("n", -1), "schema"),
    ("n more than the columns hold", set_("n", 4), "schema"),
    ("n fewer than the columns hold", set_("n", 2), "schema"),
    ("n huge (a bomb)", set_("n", 1 << 40), "schema"),
    ("n beyond the cell cap", set_("n", MAX_MESSAGE_BYTES), "schema"),
    ("cols a map", set_("cols", {}), "schema"),
    ("one column missing", lambda b: b["cols"].pop(), "schema"),
    ("one column too many", lambda b: b["cols"].append([1, b"\x00\x00\x00"]), "schema"),
    ("v2 with rows", set_("rows", [list(ROW4)]), "schema"),
    ("integer column a binary", col("proto", b"\x06\x06\x11"), "schema"),
    ("integer column a list of ints", col("proto", [6, 6, 17]), "schema"),
    ("integer column of three", col("proto", [1, b"\x06\x06\x11", 0]), "schema"),
    ("width zero", col("orig_sport", [0, b""]), "schema"),
    ("width nine", col("orig_bytes", [9, b"\x00" * 27]), "schema"),
    ("width negative", col("orig_bytes", [-1, b""]), "schema"),
    ("width a bool", col("proto", [True, b"\x06\x06\x11"]), "schema"),
    ("planes a string", col("proto", [1, "abc"]), "schema"),
    ("planes one byte short", col("orig_bytes", [2, b"\x00" * 5]), "schema"),
    ("planes one byte long", col("orig_bytes", [1, b"\x00" * 4]), "schema"),
    ("planes of another width", col("orig_bytes", [3, b"\x00" * 3]), "schema"),
    (
        "a port wider than 16 bits",
        col("orig_sport", [3, b"\x00\x00\x00" + b"\x00\x00\x00" + b"\x01\x01\x01"]),
        "schema",
    ),
    ("a protocol of 256", col("proto", [2, b"\x00\x06\x11" + b"\x01\x00\x00"]), "schema"),
    ("an unknown family", col("family", [1, b"\x02\x07\x0a"]), "address"),
    ("family 0", col("family", [1, b"\x00\x02\x0a"]), "address"),
    ("address column a list", col("orig_src", [V4[0], V4[0], V6[0]]), "address"),
    ("address column a string", col("orig_src", "x" * 24), "address"),
    ("address column short", col("orig_src", V4[0] * 2 + V6[0][:-1]), "address"),
    ("address column long", col("orig_src", V4[0] * 2 + V6[0] + b"\x00"), "address"),
    ("families and addresses disagree", col("family", [1, b"\x0a\x0a\x02"]), "address"),
    ("all IPv6 over IPv4 bytes", col("family", [1, b"\x0a\x0a\x0a"]), "address"),
]


@pytest.mark.parametrize(("forge", "reason"), [(f, r) for _, f, r in FORGED], ids=[n for n, _, _ in FORGED])
def test_forged_layouts_are_refused(forge: Any, reason: str) -> None:
    b = body()
    forge(b)
    with pytest.raises(DecodeError) as err:
        decode_raw(msgpack.packb(b, use_bin_type=True), subject="s")
    assert err.value.reason == reason
    assert err.value.subject == "s" and err.value.data


def test_a_bad_value_names_its_row_as_v1_does() -> None:
    b = body()
    b["cols"][FIELD["zone"]] = [3, b"\x00\x00\x00" * 2 + b"\x00\x00\x01"]  # row 2: zone 65536
    with pytest.raises(DecodeError) as err:
        decode_raw(msgpack.packb(b, use_bin_type=True))
    assert err.value.reason == "schema"
    assert "row 2: zone=65536" in str(err.value)


def test_a_few_bytes_never_unfold_into_gigabytes() -> None:
    """Every row costs bytes in every column: ``n`` cannot promise more rows than the payload holds."""
    b = body([])
    b["n"] = MAX_MESSAGE_BYTES // RAW_ROW_FIELDS
    data = msgpack.packb(b, use_bin_type=True)
    assert len(data) < 300
    with pytest.raises(DecodeError):
        decode_raw(data)


def test_the_largest_message_decodes() -> None:
    """A message near the agent's size bound (2 MiB of rows, every counter 64 bits) round-trips."""
    many = [ROW4._replace(orig_sport=i % 65536, orig_bytes=U64 - i, reply_bytes=i) for i in range(40_000)]
    data = encode_raw(message(many))
    assert len(data) < MAX_MESSAGE_BYTES
    assert decode_raw(data).rows == many


def test_an_unknown_version_is_refused_and_v1_still_decodes() -> None:
    b = body()
    b["v"] = 3
    with pytest.raises(DecodeError) as err:
        decode_raw(msgpack.packb(b, use_bin_type=True))
    assert err.value.reason == "version"
    msg = message([ROW4, ROW6])
    old = encode_raw(msg, version=1)
    assert msgpack.unpackb(old)["v"] == 1 and "rows" in msgpack.unpackb(old)
    assert decode_raw(old) == msg


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipped_bytes_only_raise_decode_error(data: st.DataObject) -> None:
    encoded = encode_raw(message([ROW4, ROW6, ROW4._replace(orig_bytes=U64)]))
    flipped = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        flipped[data.draw(st.integers(0, len(encoded) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        decode_raw(bytes(flipped))
    except DecodeError:
        pass


def test_planes_unpack_checks_before_allocating() -> None:
    with pytest.raises(planes.PlanesError):
        planes.unpack_ints([8, b"\x00" * 8], 1 << 40)
    with pytest.raises(planes.PlanesError):
        planes.unpack_addresses(b"\x00" * 4, 16, 1 << 40)
    assert planes.unpack_ints(planes.pack_ints([U64, 0, 1 << 40]), 3) == [U64, 0, 1 << 40]
