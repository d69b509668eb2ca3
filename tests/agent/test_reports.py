"""Reports: deterministic chunks under the size bound, and merges/splits that keep every byte once."""

from __future__ import annotations

import msgpack
import pytest

from kubenetmon.agent import reports
from kubenetmon.shared.ledger import TIMESTAMPS_UNKNOWN, Ledger, ledger_map
from kubenetmon.shared.schema import RawRow, decode_raw, record_of


def rows(n: int, *, v6: bool = False, salt: int = 0, big: int = 2**40) -> list[RawRow]:
    size = 16 if v6 else 4
    fam = 10 if v6 else 2
    return [
        RawRow(6, fam, 0, bytes([10]) * size, i.to_bytes(size, "big"), 1000 + i % 50000, 80,
               i.to_bytes(size, "big"), bytes([10]) * size, 80, 1000 + i % 50000,
               big - salt, big + i, 1, i)
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("v6", [False, True])
def test_chunks_fit_and_round_trip(v6: bool) -> None:
    data = rows(20_000, v6=v6, big=2**63)
    rep = reports.build(data, node="node-a", boot="b" * 36, start=120, seconds=60, seq=7, max_bytes=65536)
    assert len(rep.chunks) > 10 and all(len(c) <= 65536 for c in rep.chunks)
    msgs = [decode_raw(c) for c in rep.chunks]
    assert [m.chunk for m in msgs] == list(range(len(msgs))) and {m.chunks for m in msgs} == {len(msgs)}
    assert [r for m in msgs for r in m.rows] == data == reports.rows_of(rep)
    assert [m.msg_id for m in msgs] == [rep.msg_id(i) for i in range(len(msgs))]
    assert len(set(rep.chunks)) == len(rep.chunks)
    again = reports.build(data, node="node-a", boot="b" * 36, start=120, seconds=60, seq=7, max_bytes=65536)
    assert again == rep


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("max_bytes", [4096, 65536, 512 * 1024])
def test_the_widest_rows_fit_the_bound(v6: bool, max_bytes: int) -> None:
    """Every field at its widest (64-bit counters, 16-bit ports and zone), the longest node name and
    boot id: each chunk still fits (RAW v2's column headers are within ``_HEADER_BOUND``). No ledger:
    its totals of such counters would not fit 64 bits (its own bound is tested below)."""
    top = 2**64 - 1
    wide = {"proto": 255, "zone": 65535, "orig_sport": 65535, "reply_sport": 65535, "reply_dport": 65535,
            "orig_packets": top, "reply_packets": top, "reply_bytes": top}  # fmt: skip
    data = [
        r._replace(orig_dport=65535 - i % 7, orig_bytes=top - i, **wide)
        for i, r in enumerate(rows(30_000, v6=v6))
    ]
    rep = reports.build(data, node="n" * 253, boot="b" * 64, start=2**32 - 60, seconds=60, seq=2**63,
                        max_bytes=max_bytes)  # fmt: skip
    assert all(len(c) <= max_bytes for c in rep.chunks)
    assert reports.rows_of(rep) == data


def test_merge_sums_per_identity_and_spans_intervals() -> None:
    a = reports.build(rows(100), node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096)
    b = reports.build(
        rows(150, salt=1)[50:], node="n", boot="b", start=120, seconds=60, seq=2, max_bytes=4096
    )
    m = reports.merge(a, b, seq=3, max_bytes=8192)
    assert (m.start, m.seconds, m.seq, m.rows) == (60, 120, 3, 150)
    merged = {r[:11]: r[11:] for r in reports.rows_of(m)}
    total = sum(r.orig_bytes + r.reply_bytes for r in reports.rows_of(a) + reports.rows_of(b))
    assert sum(v[1] + v[3] for v in merged.values()) == total
    assert merged[rows(1)[0][:11]] == rows(1)[0][11:]
    assert merged[rows(60)[55][:11]][1] == 2 * (2**40 + 55)


def test_split_recuts_one_chunk() -> None:
    rep = reports.build(rows(3000), node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=65536)
    part = reports.split(rep, 1, seq=9, max_bytes=8192)
    assert part.seq == 9 and all(len(c) <= 8192 for c in part.chunks)
    assert reports.rows_of(part) == decode_raw(rep.chunks[1]).rows


def test_persisted_form_round_trips_and_refuses_garbage() -> None:
    rep = reports.build(rows(10), node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096)
    assert reports.loads(reports.dumps(rep)) == rep
    for junk in (b"", b"\x93\x01\x02\x03", reports.dumps(rep)[:-3]):
        with pytest.raises(ValueError):
            reports.loads(junk)


def test_too_small_bound_is_refused() -> None:
    with pytest.raises(ValueError):
        reports.build(rows(1), node="n", boot="b", start=0, seconds=60, seq=0, max_bytes=300)


def test_the_largest_ledger_fits_its_bound() -> None:
    top = 2**64 - 1
    for stamps in (TIMESTAMPS_UNKNOWN, 0, 1):
        ledger = Ledger(top - 1, top, top, top, top, top, top, top, stamps)
        assert len(msgpack.packb(ledger_map(ledger), use_bin_type=True)) <= reports._LEDGER_BOUND


def test_ids_carry_the_key_and_records_keep_their_own_id() -> None:
    """The key is in the ``Nats-Msg-Id`` only: the record (and so its rows' identities) is unchanged."""
    key = reports.new_key()
    plain = reports.build(rows(300), node="node-a", boot="b", start=60, seconds=60, seq=4, max_bytes=4096)
    keyed = reports.build(
        rows(300), node="node-a", boot="b", start=60, seconds=60, seq=4, max_bytes=4096, key=key
    )
    assert keyed.chunks == plain.chunks and len(keyed.chunks) > 1
    for i, chunk in enumerate(keyed.chunks):
        record = decode_raw(chunk).msg_id
        assert plain.msg_id(i) == record == f"node-a/b/60/4/{i}"
        assert keyed.msg_id(i) == f"{record}/{key}" and record_of(keyed.msg_id(i)) == record
        assert record_of(record) == record  # an older, unkeyed id reads as itself
    assert key != reports.new_key() and int(key, 16) >= 0 and len(key) == 32
    merged = reports.merge(keyed, keyed, seq=9, max_bytes=4096)
    assert merged.key == key and reports.split(keyed, 0, seq=10, max_bytes=2048).key == key


def test_stored_reports_keep_their_key_and_older_ones_load_without() -> None:
    keyed = reports.build(rows(10), node="n", boot="b", start=60, seconds=60, seq=1, max_bytes=4096, key="k1")
    assert reports.loads(reports.dumps(keyed)) == keyed
    legacy = msgpack.packb([1, "n", "b", 60, 60, 1, 10, list(keyed.chunks)], use_bin_type=True)
    old = reports.loads(legacy)
    assert old.key == "" and old.chunks == keyed.chunks and old.msg_id(0) == "n/b/60/1/0"
    for bad in (
        [1, "n", "b", 60, 60, 1, 10, list(keyed.chunks), "k1"],  # format 1 has no key
        [2, "n", "b", 60, 60, 1, 10, list(keyed.chunks)],  # format 2 has one
        [2, "n", "b", 60, 60, 1, 10, list(keyed.chunks), 7],
        [3, "n", "b", 60, 60, 1, 10, list(keyed.chunks), "k1"],
    ):
        with pytest.raises(ValueError):
            reports.loads(msgpack.packb(bad, use_bin_type=True))
