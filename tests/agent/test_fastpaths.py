"""The fast paths give exactly what their reference paths give: the dump decoder (``Decoder.columns``
against ``Decoder.scan``), the delta table (``FlowTable.observe`` against ``observe_each``) and the dump
tool (``dump.Printer`` against ``Decoder.entries`` + ``dump.formatter``), for IPv4 and IPv6, TCP, UDP,
SCTP, ICMP and GRE, with and without creation times, zones, marks, labels, NAT, dying entries, events
and interrupted dumps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetmon.agent import ctnetlink as ct
from kubenetmon.agent import dump
from kubenetmon.agent.flows import FlowTable
from tests.support.ctmsg import Entry, done

INTERRUPTED_FLAGS = (2 | ct.NLM_F_DUMP_INTR).to_bytes(2, "little")


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([6, 6, 17, 17, 1, 132, 47]))
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.1.2.3", "10.3.2.1")
    nat = draw(st.sampled_from(["", "fd00::9" if v6 else "192.168.7.9"]))
    return Entry(
        src=src,
        dst=dst,
        reply_src=nat,
        sport=draw(st.integers(0, 65535)),
        dport=draw(st.sampled_from([0, 53, 443, 65535])),
        proto=proto,
        zone=draw(st.sampled_from([0, 0, 7, 65535])),
        ident=draw(st.integers(0, 2**32 - 1)),
        counters=draw(st.tuples(*[st.sampled_from([0, 1, 1500, 2**32, 2**64 - 1])] * 4)),
        mark=draw(st.sampled_from([0, 0, 1, 2**32 - 1])),
        status=draw(st.sampled_from([0x18E, 0x18E, 0x18E | ct.IPS_DYING])),
        state=draw(st.integers(0, 12)),
        start=draw(st.sampled_from([0, 1, 1_700_000_000_123_456_789, 2**63])),  # a DESTROY adds a stop time
        labels=draw(st.sampled_from([b"", b"", bytes(16), b"\x81" * 16])),
        sctp_state=draw(st.sampled_from([-1, 0, 4, 9, 10, 200])),
    )


def messages(batch: list[Entry], interrupted: list[bool], *, events: bool = False) -> bytes:
    out = []
    for i, e in enumerate(batch):
        event = events and i % 3 == 2
        msg = e.message(seq=i, event=event, kind=ct.CT_DELETE if event else ct.CT_NEW)
        if interrupted[i % len(interrupted)]:
            msg = msg[:6] + INTERRUPTED_FLAGS + msg[8:]
        out.append(msg)
    return b"".join(out) + done()


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(entries(), min_size=1, max_size=25),
    interrupted=st.lists(st.booleans(), min_size=1, max_size=4).map(lambda f: [*f, *[False] * 8]),
    events=st.booleans(),
)
def test_columns_equal_scan(batch: list[Entry], interrupted: list[bool], events: bool) -> None:
    data = messages(batch, interrupted, events=events)
    reference, fast = ct.Decoder(), ct.Decoder()
    for _ in range(2):  # the first pass learns the shapes, the second runs on the expression
        pairs: list[tuple[bytes, bytes]] = []
        keys: list[bytes] = []
        cnts: list[bytes] = []
        assert fast.columns(data, keys, cnts) == reference.scan(data, pairs.append)
        assert list(zip(keys, cnts, strict=True)) == pairs
        assert (fast.dying, fast.walked) == (reference.dying, reference.walked)


def test_columns_take_a_learned_shape_by_the_expression() -> None:
    mix = [Entry(sport=1000 + i, ident=i, start=10**18 + i, zone=7 * (i % 3 == 0)) for i in range(300)]
    mix += [Entry(src="fd00::1", dst="fd00::2", proto=17, ident=i, counters=(i, i, i, i)) for i in range(300)]
    data = b"".join(e.message() for e in mix) + done()
    decoder = ct.Decoder()
    keys: list[bytes] = []
    cnts: list[bytes] = []
    assert decoder.columns(data, keys, cnts) == ct.DONE
    pairs: list[tuple[bytes, bytes]] = []
    ct.Decoder().scan(data, pairs.append)
    assert list(zip(keys, cnts, strict=True)) == pairs and len(pairs) == 600
    assert decoder.walked == 3 and len(decoder._branches) == 3  # one walk per shape, then the expression


def test_columns_refuse_what_scan_refuses() -> None:
    data = Entry().message() + Entry(ident=2).message()
    for cut in (len(data) - 3, len(data) - 40, 8):
        for decode in (
            lambda d: ct.Decoder().scan(d, lambda _: None),
            lambda d: ct.Decoder().columns(d, [], []),
        ):
            with pytest.raises(ValueError):
                decode(data[:cut])


@given(st.binary(max_size=600))
def test_columns_on_garbage_raise_only_value_or_os_errors(data: bytes) -> None:
    decoder = ct.Decoder()
    decoder.columns(Entry().message(), [], [])  # a learned shape, so the expression runs too
    try:
        decoder.columns(data, [], [])
    except (ValueError, OSError):
        pass


KEYS = [Entry(sport=1000 + i, ident=i, start=i % 2).key() for i in range(10)]


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, object]]:
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["dump", "dump", "dump", "destroy", "take"]))
        if kind == "dump":
            seen = draw(st.lists(st.sampled_from(KEYS), max_size=14))  # duplicates and any order
            batches = draw(st.integers(1, 3))
            counters = [ct.counters_blob(*draw(st.tuples(*[st.integers(0, 3)] * 4))) for _ in seen]
            steps.append((kind, (seen, counters, batches, draw(st.booleans()))))
        elif kind == "destroy":
            steps.append(
                (kind, (draw(st.sampled_from(KEYS)), ct.counters_blob(*[draw(st.integers(0, 4))] * 4)))
            )
        else:
            steps.append((kind, None))
    return steps


@settings(max_examples=150, deadline=None)
@given(history=histories(), max_flows=st.sampled_from([3, 6, 100]))
def test_observe_equals_observe_each(history: list[tuple[str, object]], max_flows: int) -> None:
    fast, reference = FlowTable(max_flows=max_flows), FlowTable(max_flows=max_flows)
    for kind, arg in history:
        if kind == "dump":
            seen, counters, batches, consistent = arg  # type: ignore[misc]
            fast.begin_dump()
            reference.begin_dump()
            size = -(-len(seen) // batches) or 1
            for i in range(0, len(seen), size):
                fast.observe(list(seen[i : i + size]), list(counters[i : i + size]))
                reference.observe_each(list(zip(seen[i : i + size], counters[i : i + size], strict=True)))
            fast.end_dump(consistent=consistent)
            reference.end_dump(consistent=consistent)
        elif kind == "destroy":
            fast.destroy(arg)  # type: ignore[arg-type]
            reference.destroy(arg)  # type: ignore[arg-type]
        else:
            assert fast.take() == reference.take()
        assert fast.last == reference.last and fast.deltas == reference.deltas
        assert list(fast.missing) == list(reference.missing) and list(fast.destroyed) == list(
            reference.destroyed
        )
        assert fast.stats == reference.stats


def reference_lines(fmt: str, data: bytes) -> tuple[str, int]:
    batch: list[dump.Entry] = []
    flags = ct.Decoder().entries(data, batch)
    return dump.formatter(fmt)(batch), flags


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(entries(), min_size=1, max_size=25),
    interrupted=st.lists(st.booleans(), min_size=1, max_size=4).map(lambda f: [*f, *[False] * 8]),
    fmt=st.sampled_from(["text", "json"]),
)
def test_printer_equals_the_reference_formatting(
    batch: list[Entry], interrupted: list[bool], fmt: str
) -> None:
    data = messages(batch, interrupted)
    printer = dump.Printer(fmt)
    lines, flags = reference_lines(fmt, data)
    for _ in range(2):  # the first pass learns the shapes, the second prints through the expression
        assert printer(data) == (lines, len(batch), flags)


def test_printer_prints_learned_shapes_by_the_expression() -> None:
    mix = []
    for i in range(400):
        v6, proto = i % 10 == 9, (6, 6, 17, 132)[i % 4]
        mix.append(
            Entry(
                src="fd00::1" if v6 else f"10.0.{i >> 8}.{i & 255}",
                dst="fd00::2" if v6 else "10.200.0.1",
                sport=1024 + i,
                proto=proto,
                zone=7 if i % 10 == 3 else 0,
                mark=i % 5,
                ident=i,
                state=i % 12,
                sctp_state=i % 11,
                start=10**18 + i,
                counters=(i, i * 60, i // 2, i * 30),
            )
        )
    data = b"".join(e.message() for e in mix) + done()
    for fmt in ("text", "json"):
        printer = dump.Printer(fmt)
        lines, flags = reference_lines(fmt, data)
        assert printer(data) == (lines, len(mix), flags) == (lines, 400, ct.DONE)
        assert len(printer.branches) >= 6 and printer.decoder.walked <= 4 * len(printer.branches)
