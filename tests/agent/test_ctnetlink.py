"""The fast ctnetlink decoder: the sliced path agrees with the slow walk, for every shape and any input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenetmon.agent import ctnetlink as ct
from tests.support.ctmsg import Entry, done, error

SHAPES = [
    Entry(),
    Entry(src="fd00::1", dst="fd00::2", proto=17, state=-1),
    Entry(proto=17, zone=3, mark=9, counters=(2**40, 2**63, 0, 1)),
    Entry(src="fd00::1", dst="fd00::2", reply_src="fd00::9", zone=65535),
    Entry(proto=1, sport=0, dport=0),  # ICMP: no ports
    Entry(proto=132, state=4),
]


def scanned(data: bytes, decoder: ct.Decoder | None = None) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    (decoder or ct.Decoder()).scan(data, out.append)
    return out


@pytest.mark.parametrize("entry", SHAPES)
def test_fields_decode(entry: Entry) -> None:
    [(key, counters)] = scanned(entry.message())
    f = ct.decode_key(key)
    assert (ipaddress.ip_address(f.orig_src), ipaddress.ip_address(f.orig_dst)) == (
        ipaddress.ip_address(entry.src),
        ipaddress.ip_address(entry.dst),
    )
    assert ipaddress.ip_address(f.reply_src) == ipaddress.ip_address(entry.reply_src or entry.dst)
    assert (f.proto, f.zone, f.id) == (entry.proto, entry.zone, entry.ident)
    assert (f.orig_sport, f.orig_dport, f.reply_sport, f.reply_dport) == (
        entry.sport,
        entry.dport,
        entry.dport,
        entry.sport,
    )
    assert f.family == (10 if ":" in entry.src else 2)
    assert ct.counters(counters) == entry.counters


@pytest.mark.parametrize("entry", SHAPES)
def test_full_decode_has_status_mark_and_state(entry: Entry) -> None:
    msgs: list[ct.Message] = []
    flags = ct.Decoder().messages(entry.message() + done(), msgs)
    assert flags == ct.DONE
    [msg] = msgs
    assert (msg.status, msg.mark) == (entry.status, entry.mark)
    assert msg.state == (entry.state if entry.proto in (6, 132) and entry.proto == 6 else -1)
    assert (msg.key, msg.counters) == scanned(entry.message())[0]


def test_one_slow_walk_per_shape_then_sliced() -> None:
    decoder = ct.Decoder()
    batch = b"".join(
        Entry(sport=1000 + i, ident=i, counters=(i, i * 60, i, i * 61)).message() for i in range(500)
    )
    out = scanned(batch, decoder)
    assert decoder.walked == 1 and len(out) == 500
    assert [ct.counters(c)[1] for _, c in out] == [i * 60 for i in range(500)]
    assert len({k for k, _ in out}) == 500


def test_same_length_different_shape_is_not_misread() -> None:
    # as events: a zone without a mark and a mark without a zone give messages of equal length
    with_zone = Entry(zone=5, mark=0, ident=1).message(event=True, kind=ct.CT_DELETE)
    with_mark = Entry(zone=0, mark=7, ident=2).message(event=True, kind=ct.CT_DELETE)
    assert len(with_zone) == len(with_mark)
    decoder = ct.Decoder()
    out = scanned(with_zone + with_mark + with_zone, decoder)
    assert [ct.decode_key(k).zone for k, _ in out] == [5, 0, 5]
    assert decoder.walked == 3


def test_dump_and_event_keys_agree() -> None:
    entry = Entry(zone=4, mark=3)
    [(dump_key, _)] = scanned(entry.message())
    [(event_key, _)] = scanned(entry.message(event=True, kind=ct.CT_DELETE))
    assert dump_key == event_key == entry.key()
    assert ct.row_key(dump_key) == dump_key[: -ct.INSTANCE]


def test_dying_dump_entries_are_skipped_but_not_dying_events() -> None:
    decoder = ct.Decoder()
    alive, dying = Entry(ident=1), Entry(ident=2, status=0x18E | ct.IPS_DYING)
    out: list[tuple[bytes, bytes]] = []
    data = alive.message() + dying.message() + dying.message() + done()
    assert decoder.scan(data, out.append) == ct.DONE
    assert [ct.decode_key(k).id for k, _ in out] == [1] and decoder.dying == 2 and decoder.walked == 1
    event = dying.message(event=True, kind=ct.CT_DELETE)
    assert scanned(event + event) == [(dying.key(), ct.counters_blob(*dying.counters))] * 2


def test_done_interrupted_and_errors() -> None:
    decoder = ct.Decoder()
    assert decoder.scan(Entry().message() + done(), lambda _: None) == ct.DONE
    flags = decoder.scan(Entry().message() + done(flags=2 | ct.NLM_F_DUMP_INTR), lambda _: None)
    assert flags == ct.DONE | ct.INTERRUPTED
    assert decoder.scan(error(0), lambda _: None) == 0  # an ACK
    with pytest.raises(OSError, match="Operation not permitted"):
        decoder.scan(error(1), lambda _: None)


def test_truncated_messages_are_refused() -> None:
    data = Entry().message()
    for cut in (8, 19, 40, len(data) - 3):
        with pytest.raises(ValueError):
            ct.Decoder().scan(data[:cut], lambda _: None)


@given(
    v6=st.booleans(),
    proto=st.sampled_from([6, 17, 132, 1, 47]),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    zone=st.integers(0, 65535),
    mark=st.integers(0, 2**32 - 1),
    ident=st.integers(0, 2**32 - 1),
    counters=st.tuples(*[st.integers(0, 2**64 - 1)] * 4),
    event=st.booleans(),
)
def test_sliced_equals_walked(
    v6: bool,
    proto: int,
    ports: tuple[int, int],
    zone: int,
    mark: int,
    ident: int,
    counters: tuple[int, int, int, int],
    event: bool,
) -> None:
    entry = Entry(
        src="fd00::1" if v6 else "10.1.2.3",
        dst="fd00::2" if v6 else "10.3.2.1",
        proto=proto,
        sport=ports[0],
        dport=ports[1],
        zone=zone,
        mark=mark,
        ident=ident,
        counters=counters,
    )
    data = entry.message(event=event, kind=ct.CT_DELETE if event else ct.CT_NEW)
    decoder = ct.Decoder()
    first, second = scanned(data + data, decoder)  # the second one takes the cached layout
    walked = ct.walk(data, 0, len(data))
    assert first == second == (walked.key, walked.counters)
    assert ct.counters(first[1]) == counters
    f = ct.decode_key(first[0])
    assert (f.zone, f.id, f.proto) == (zone, ident, proto)


@given(st.binary(max_size=600))
def test_garbage_raises_only_value_or_os_errors(data: bytes) -> None:
    try:
        ct.Decoder().scan(data, lambda _: None)
        ct.Decoder().messages(data, [])
    except (ValueError, OSError):
        pass


def test_creation_time_is_part_of_the_key_in_dumps_and_events_alike() -> None:
    entry = Entry(ident=9, start=1_700_000_000_123_456_789)
    for decoder in (ct.Decoder(), ct.Decoder()):
        out: list[tuple[bytes, bytes]] = []
        for _ in range(2):  # the first walks (slow path), the second is sliced by its layout
            decoder.scan(entry.message(), out.append)
            decoder.scan(entry.message(event=True, kind=ct.CT_DELETE), out.append)
        assert len({k for k, _ in out}) == 1 and decoder.walked == 2
        f = ct.decode_key(out[0][0])
        assert (f.id, f.start, f.orig_sport) == (9, 1_700_000_000_123_456_789, 1000)
    assert ct.decode_key(Entry(ident=9).key()).start == 0


def test_dump_tool_fast_paths_equal_the_full_decode() -> None:
    entries = [
        Entry(),
        Entry(sport=1001, ident=2, zone=7, mark=0x2A, start=5),
        Entry(src="fd00::1", dst="fd00::2", proto=17, ident=3, counters=(4, 400, 3, 300)),
        Entry(src="fd00::1", dst="fd00::9", proto=17, ident=4, status=0x18E | ct.IPS_DYING),
        Entry(proto=132, ident=5, state=4),
    ]
    buf = b"".join(e.message(seq=i) for i in range(3) for e in entries) + done()
    full: list[ct.Message] = []
    ct.Decoder().messages(buf, full)
    decoder, fast, sums = ct.Decoder(), [], [0] * 5
    assert decoder.entries(buf, fast) == ct.DONE and decoder.totals(buf, sums) == ct.DONE
    assert fast == [(m.key, m.counters, m.mark, m.state) for m in full] and decoder.walked <= len(entries)
    assert sums == [len(full), *map(sum, zip(*(ct.counters(m.counters) for m in full), strict=True))]
    keys = ct.KeyReader()
    assert [keys.fields(m.key) for m in full] == [ct.decode_key(m.key) for m in full]


def test_dump_request_is_what_pyroute2_encodes() -> None:
    import socket

    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK
    from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_GET, nfct_msg

    from kubenetmon.agent.conntrack import dump_request

    msg = nfct_msg()
    msg["nfgen_family"] = socket.AF_UNSPEC
    msg["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 77
    msg.encode()
    assert dump_request(77) == bytes(msg.data)


def test_dump_tool_lines_equal_the_reference_formatting() -> None:
    import json

    from kubenetmon.agent import dump

    entries = [
        Entry(),
        Entry(sport=1001, ident=2, zone=7, mark=0x2A, start=5),
        Entry(src="fd00::1", dst="fd00::2", proto=17, ident=3, counters=(4, 400, 3, 300)),
        Entry(proto=132, ident=5, state=4),
        Entry(proto=6, ident=6, state=200),
    ]
    buf = b"".join(e.message(seq=i) for i in range(2) for e in entries) + done()
    full: list[ct.Message] = []
    ct.Decoder().messages(buf, full)
    fast: list[tuple[bytes, bytes, int, int]] = []
    ct.Decoder().entries(buf, fast)
    assert dump.formatter("text")(fast) == "".join(dump.text(dump.entry(m)) + "\n" for m in full)
    assert dump.formatter("json")(fast) == "".join(json.dumps(dump.entry(m)) + "\n" for m in full)
