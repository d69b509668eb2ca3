"""Names in reports: each chunk names its own rows' addresses within the size bound; merges never guess."""

from __future__ import annotations

import msgpack
import pytest

from kubenetmon.agent import reports
from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema import RawMessage, RawRow, decode_raw, encode_raw
from tests.agent.test_reports import rows


def names_for(data: list[RawRow], *, every: int = 3, length: int = 60) -> dict[bytes, str]:
    """A name for the remote (reply source) of every ``every``-th row, about ``length`` characters long."""
    labels = ".".join(["x" * 59] * max(1, (length - 20) // 60))
    return {r.reply_src: f"h{i}.{labels}.example.com" for i, r in enumerate(data) if i % every == 0}


@pytest.mark.parametrize("v6", [False, True])
def test_every_chunk_names_exactly_its_rows_addresses_within_the_bound(v6: bool) -> None:
    data = rows(5_000, v6=v6)
    names = names_for(data, every=2, length=253)
    rep = reports.build(data, node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=8192, names=names)
    assert all(len(c) <= 8192 for c in rep.chunks) and len(rep.chunks) > 10
    for chunk in rep.chunks:
        msg = decode_raw(chunk)
        addresses = {r.orig_src for r in msg.rows} | {r.reply_src for r in msg.rows}
        assert msg.names == {a: n for a, n in names.items() if a in addresses}
    assert reports.names_of(rep) == names and reports.rows_of(rep) == data


def test_without_names_the_chunks_are_byte_identical_to_before() -> None:
    data = rows(300)
    plain = reports.build(data, node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096)
    assert (
        reports.build(data, node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096, names={})
        == plain
    )
    assert all(b"names" not in c for c in plain.chunks)


def test_merge_keeps_names_and_drops_an_address_named_differently() -> None:
    data = rows(10)
    one, two, three = data[0].reply_src, data[1].reply_src, data[2].reply_src
    a = reports.build(data, node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096,
                      names={one: "a.example.com", two: "b.example.com"})  # fmt: skip
    b = reports.build(data, node="n", boot="b", start=120, seconds=60, seq=2, max_bytes=4096,
                      names={two: "other.example.com", three: "c.example.com"})  # fmt: skip
    merged = reports.merge(a, b, seq=3, max_bytes=4096)
    assert reports.names_of(merged) == {one: "a.example.com", three: "c.example.com"}


def test_split_keeps_the_chunks_names() -> None:
    data = rows(2_000)
    names = names_for(data)
    rep = reports.build(data, node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=65536, names=names)
    again = reports.split(rep, 0, seq=2, max_bytes=8192)
    assert len(again.chunks) > 1 and reports.names_of(again) == decode_raw(rep.chunks[0]).names
    assert reports.names_of(rep) == names


def test_older_reports_without_names_decode_with_none() -> None:
    msg = RawMessage("n", "b", 60, 60, 1, 0, 1, rows(2))
    assert decode_raw(encode_raw(msg)).names == {}


def _with_names(names: object) -> bytes:
    body = msgpack.unpackb(encode_raw(RawMessage("n", "b", 60, 60, 1, 0, 1, rows(2))), raw=False)
    body["names"] = names
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ([], "schema"),
        ({b"\x01\x02\x03": "a.example.com"}, "address"),
        ({"1.2.3.4": "a.example.com"}, "address"),
        ({b"\x01\x02\x03\x04": ""}, "schema"),
        ({b"\x01\x02\x03\x04": "A.example.com"}, "schema"),
        ({b"\x01\x02\x03\x04": "a b.example.com"}, "schema"),
        ({b"\x01\x02\x03\x04": "a.example.com."}, "schema"),
        ({b"\x01\x02\x03\x04": "x" * 64}, "schema"),
        ({b"\x01\x02\x03\x04": ".".join(["x" * 63] * 4) + "x"}, "schema"),
        ({b"\x01\x02\x03\x04": "a\\046b.com"}, "schema"),
        ({b"\x01\x02\x03\x04": 7}, "schema"),
        ({b"\x01\x02\x03\x04": "\u00e9.example.com"}, "schema"),
    ],
)
def test_implausible_names_are_refused(names: object, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_raw(_with_names(names))
    assert err.value.reason == reason


def test_a_long_but_valid_name_is_kept() -> None:
    name = ".".join(["x" * 63] * 3) + "." + "y" * 61  # 253 characters
    assert decode_raw(_with_names({b"\x01\x02\x03\x04": name})).names == {b"\x01\x02\x03\x04": name}
