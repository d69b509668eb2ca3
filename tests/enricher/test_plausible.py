"""The plausibility checks alone (pure): each implausible report is refused with its reason, a plausible one
passes, and the row that stands for a refused chunk names the right interval."""

from __future__ import annotations

import pytest

from kubenetmon.enricher import plausible as p
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import RawMessage, RawRow, decode_raw, encode_raw
from tests.support.builders import raw_row

NOW = 1_800_000_000  # aligned to 60 s
BOUNDS = p.Bounds()
U64 = (1 << 64) - 1
LIMIT = int(400e9 / 8 * 60)  # bytes one flow may count in a 60 s report


def row(orig: tuple[int, int] = (10, 1000), reply: tuple[int, int] = (8, 800)) -> RawRow:
    return raw_row(
        "tcp",
        ("10.0.0.1", 1, "10.0.0.2", 2),
        ("10.0.0.2", 2, "10.0.0.1", 1),
        orig_counters=orig,
        reply_counters=reply,
    )


def report(
    content: list[RawRow],
    *,
    start: int = NOW - 120,
    seconds: int = 60,
    node: str = "n1",
    chunks: int = 1,
    **lie: int,
) -> RawMessage:
    totals = {
        "rows": len(content),
        "bytes": min(U64, sum(r.orig_bytes + r.reply_bytes for r in content)),
        "packets": min(U64, sum(r.orig_packets + r.reply_packets for r in content)),
        **lie,
    }
    ledger = Ledger(start * 1000, (start + seconds) * 1000, flows=1, events_lost=0, table_drops=0, **totals)
    msg = RawMessage(node, "b", start, seconds, 0, 0, chunks, content, ledger=ledger)
    return decode_raw(encode_raw(msg))  # as the enricher sees it


def reason(msg: RawMessage, *, subject_node: str | None = "n1", bounds: p.Bounds = BOUNDS) -> str:
    try:
        p.check(msg, bounds=bounds, now_s=NOW, subject_node=subject_node)
    except p.Implausible as exc:
        return exc.reason
    return ""


def test_a_plausible_report_passes() -> None:
    assert reason(report([row(), row(orig=(1, LIMIT), reply=(1, LIMIT))])) == ""
    assert reason(report([])) == ""
    assert reason(report([row()], start=NOW + 240)) == ""  # within the clock skew, its span too
    # a catch-up report spans several intervals: its bound grows with its span
    assert reason(report([row(orig=(1, 3 * LIMIT))], start=NOW - 600, seconds=180)) == ""


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        (((1, U64), (1, 1)), "counter"),
        (((1, 1), (1, 1 << 63)), "counter"),
        (((1, LIMIT + 1), (1, 1)), "counter"),
        (((U64, 1000), (1, 1)), "counter"),  # packets, bounded by bytes / 20
        (((LIMIT // 20 + 1, 1000), (1, 1)), "counter"),
    ],
)
def test_a_counter_over_the_bound_is_refused(counters: tuple[tuple[int, int], ...], expected: str) -> None:
    assert reason(report([row(), row(*counters)])) == expected


def test_a_ledger_claiming_decades_does_not_lift_the_bound_past_a_day() -> None:
    huge = row(orig=(1, (1 << 64) - 1))
    ledger = Ledger(0, NOW * 1000, rows=1, bytes=U64, packets=1 + 8, flows=1, events_lost=0, table_drops=0)
    msg = decode_raw(encode_raw(RawMessage("n1", "b", NOW - 120, 60, 0, 0, 1, [huge], ledger=ledger)))
    assert reason(msg) == "counter"
    day = int(400e9 / 8 * p.MAX_SPAN_S)  # the bound of a report spanning a day or more

    def catch_up(nbytes: int) -> RawMessage:  # a report whose ledger reaches back two days (an outage)
        rows = [row(orig=(1, nbytes))]
        total = nbytes + 800
        ledger = Ledger(
            (NOW - 2 * 86400) * 1000, NOW * 1000, 1, total, 9, flows=1, events_lost=0, table_drops=0
        )
        return decode_raw(encode_raw(RawMessage("n1", "b", NOW - 60, 60, 0, 0, 1, rows, ledger=ledger)))

    assert reason(catch_up(day)) == ""
    assert reason(catch_up(day + 1)) == "counter"


def test_the_bound_is_configurable() -> None:
    msg = report([row(orig=(1, 10 * 10**9))])  # 10 GB in 60 s: 1.33 Gbit/s
    assert reason(msg, bounds=p.Bounds(max_flow_gbps=1)) == "counter"
    assert reason(msg, bounds=p.Bounds(max_flow_gbps=2)) == ""
    unbounded = p.Bounds(max_flow_gbps=0)
    assert reason(report([row(orig=(1, U64))], bytes=U64), bounds=unbounded) == "ledger"  # sums never wrap
    assert reason(report([row(orig=(1, 10**15))]), bounds=unbounded) == ""


def test_each_other_implausible_report_names_its_reason() -> None:
    assert reason(report([row()], node="n2")) == "node_mismatch"
    assert reason(report([row()], node="n.2"), subject_node="n_2") == ""  # the subject's spelling of n.2
    assert reason(report([row()], start=NOW - 120 + 7)) == "unaligned"
    assert reason(report([row()], seconds=90)) == "unaligned"
    assert reason(report([row()], start=NOW + 360)) == "future"
    assert reason(report([row()], start=NOW + 300)) == "ledger"  # its span ends too far ahead
    assert reason(report([row()], start=10 * 365 * 86400 + NOW)) == "future"  # year ~2067
    assert reason(report([row()], start=0)) == "expired"
    assert reason(report([row()], start=NOW - 90 * 86400)) == "expired"
    assert reason(report([row()], start=NOW - 88 * 86400)) == ""
    assert reason(report([row()], start=0), bounds=p.Bounds(ttl_days=0)) == ""  # kept forever
    assert reason(report([row()], bytes=1)) == "ledger"
    assert reason(report([row()], rows=2)) == "ledger"
    assert reason(report([row()], packets=0)) == "ledger"
    assert reason(report([row(), row()], chunks=3, rows=1)) == "ledger"  # fewer than this chunk holds
    assert reason(report([row()], chunks=3, rows=9, bytes=10**6, packets=10**4)) == ""


def test_a_report_without_a_ledger_is_checked_against_its_interval() -> None:
    msg = decode_raw(encode_raw(RawMessage("n1", "b", NOW - 60, 60, 0, 0, 1, [row(orig=(1, LIMIT + 1))])))
    assert reason(msg) == "counter"


def test_the_rejection_row_names_an_interval_and_counts_nothing() -> None:
    unaligned = p.rejection(report([row()], start=NOW - 120 + 7), p.UNALIGNED, bounds=BOUNDS, now_s=NOW)
    assert unaligned is not None and (unaligned.start, unaligned.seconds) == (NOW - 120, 60)
    future = p.rejection(report([row()], start=NOW + 86400), p.FUTURE, bounds=BOUNDS, now_s=NOW + 30)
    assert future is not None and (future.start, future.rejected) == (NOW, "future")
    counted = p.rejection(report([row()]), p.COUNTER, bounds=BOUNDS, now_s=NOW)
    assert counted is not None and counted.start == NOW - 120 and counted.chunk_rows == 0
    assert (counted.ledger.rows, counted.ledger.bytes, counted.ledger.span_to_ms) == (
        0,
        0,
        (NOW - 120) * 1000,
    )
    assert p.rejection(report([row()], start=0), p.EXPIRED, bounds=BOUNDS, now_s=NOW) is None


def test_subject_node() -> None:
    assert p.subject_node("kubenetmon.raw.n1", raw_prefix="kubenetmon.raw.") == "n1"
    assert p.subject_node("kubenetmon.raw.n1.extra", raw_prefix="kubenetmon.raw.") == "n1"
    assert p.subject_node("other.raw.n1", raw_prefix="kubenetmon.raw.") is None
