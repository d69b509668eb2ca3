"""The completeness verdicts, exhaustively: every state, their precedence, chunk grouping, spans that
chain or leave gaps, catch-ups, merged reports, window alignment and the summary line. Pure: no servers."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from kubenetmon.writer.query.completeness import (
    AT_RISK,
    COMPLETE,
    COVERED_LATER,
    LOSSY,
    NOT_SETTLED,
    NOT_YET,
    PARTIAL,
    REJECTED,
    SILENT,
    ChunkRow,
    classify,
    intervals,
    judged,
    runs,
    step_of,
    summary,
    whole,
)

T0 = 1_800_000_000 // 60 * 60  # an interval start
STEP = 60
LAG_MS = 2_000  # the poll that finds an interval over comes a little after its end


def report(
    start: int,
    *,
    node: str = "n1",
    seq: int | None = None,
    seconds: int = STEP,
    chunks: int = 1,
    present: tuple[int, ...] | None = None,
    span: tuple[int, int] | None = None,
    lost: int = 0,
    drops: int = 0,
    boot: str = "b",
    stamps: int = 1,
) -> list[ChunkRow]:
    lo, hi = span if span else (start * 1000 + LAG_MS, (start + seconds) * 1000 + LAG_MS)
    return [
        ChunkRow(
            node, boot, start if seq is None else seq, start, seconds, i, chunks, lo, hi, lost, drops, stamps
        )
        for i in (range(chunks) if present is None else present)
    ]


def states(rows: list[ChunkRow], *, n: int = 5, nodes: tuple[str, ...] = ()) -> list[str]:
    return [v.state for v in classify(rows, nodes=nodes, start=T0, end=T0 + n * STEP, step=STEP)]


def steady(n: int = 5) -> list[ChunkRow]:
    return [row for i in range(n) for row in report(T0 + i * STEP)]


def test_every_interval_reported_is_complete() -> None:
    assert states(steady()) == [COMPLETE] * 5


def test_a_report_missing_a_chunk_makes_its_interval_partial() -> None:
    rows = [r for r in steady() if r.start != T0 + STEP] + report(T0 + STEP, chunks=3, present=(0, 2))
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP)
    assert [v.state for v in verdicts] == [COMPLETE, PARTIAL, COMPLETE, COMPLETE, COMPLETE]
    assert verdicts[1].missing_chunks == 1


def test_chunks_are_grouped_per_report_so_duplicates_do_not_hide_a_missing_one() -> None:
    rows = steady()[:1] + report(T0 + STEP, chunks=2, present=(0, 0)) + steady()[2:]
    assert states(rows)[1] == PARTIAL


def test_no_report_and_no_span_over_it_is_silent() -> None:
    rows = [r for r in steady() if r.start not in (T0 + 2 * STEP, T0 + 3 * STEP)]
    # the report after the gap starts its span at its own interval: the gap is not covered
    assert states(rows) == [COMPLETE, COMPLETE, SILENT, SILENT, COMPLETE]


def test_a_catch_up_spanning_the_outage_covers_it_later() -> None:
    # crash in interval 1 (last poll at +20 s); back in interval 4, whose report reaches back to the crash
    crash_ms = (T0 + STEP + 20) * 1000
    rows = report(T0) + report(T0 + STEP, span=(T0 * 1000 + LAG_MS, crash_ms))
    rows += report(T0 + 4 * STEP, span=(crash_ms, (T0 + 5 * STEP) * 1000 + LAG_MS))
    assert states(rows) == [COMPLETE, COMPLETE, COVERED_LATER, COVERED_LATER, COMPLETE]


def test_an_agent_stopped_for_good_is_silent_from_its_last_span_on() -> None:
    rows = report(T0) + report(T0 + STEP)
    assert states(rows, n=4) == [COMPLETE, COMPLETE, SILENT, SILENT]


def test_a_span_that_only_grazes_an_interval_does_not_cover_it() -> None:
    rows = report(T0, span=(T0 * 1000, (T0 + STEP + 30) * 1000))
    assert states(rows, n=2) == [COMPLETE, SILENT]


def test_losses_make_an_interval_lossy_with_their_counts() -> None:
    rows = report(T0) + report(T0 + STEP, lost=2, drops=5) + report(T0 + 2 * STEP)
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 3 * STEP, step=STEP)
    assert [v.state for v in verdicts] == [COMPLETE, LOSSY, COMPLETE]
    assert (verdicts[1].events_lost, verdicts[1].table_drops) == (2, 5)


def test_a_lossy_catch_up_makes_what_it_covers_lossy() -> None:
    crash_ms = (T0 + 10) * 1000
    rows = report(T0, span=(T0 * 1000, crash_ms))
    rows += report(T0 + 2 * STEP, span=(crash_ms, (T0 + 3 * STEP) * 1000), drops=1)
    assert states(rows, n=3) == [COMPLETE, LOSSY, LOSSY]


def test_a_partial_catch_up_makes_what_it_covers_partial() -> None:
    crash_ms = (T0 + 10) * 1000
    rows = report(T0, span=(T0 * 1000, crash_ms))
    rows += report(T0 + 2 * STEP, span=(crash_ms, (T0 + 3 * STEP) * 1000), chunks=2, present=(1,))
    assert states(rows, n=3) == [COMPLETE, PARTIAL, PARTIAL]


def test_partial_wins_over_lossy() -> None:
    rows = report(T0, chunks=2, present=(0,), lost=3)
    assert states(rows, n=1) == [PARTIAL]


def test_a_merged_backlog_report_completes_every_interval_it_names() -> None:
    rows = report(T0) + report(T0 + STEP, seconds=3 * STEP) + report(T0 + 4 * STEP)
    assert states(rows) == [COMPLETE] * 5


def test_two_reports_for_one_interval_must_both_be_whole() -> None:
    # an early cut (table full) or a graceful restart: a second report, another seq, the same interval
    rows = steady(2) + report(T0 + STEP, seq=99, chunks=2, present=(0,))
    assert states(rows, n=2) == [COMPLETE, PARTIAL]


def test_a_node_known_only_from_elsewhere_is_silent_throughout() -> None:
    verdicts = classify(steady(2), nodes=("n2",), start=T0, end=T0 + 2 * STEP, step=STEP)
    assert [(v.node, v.state) for v in verdicts] == [("n1", COMPLETE)] * 2 + [("n2", SILENT)] * 2


def test_nodes_are_judged_separately() -> None:
    rows = steady(3) + report(T0, node="n2")
    assert [v.state for v in classify(rows, nodes=(), start=T0, end=T0 + 3 * STEP, step=STEP)] == [
        COMPLETE,
        COMPLETE,
        COMPLETE,
        COMPLETE,
        SILENT,
        SILENT,
    ]


@pytest.mark.parametrize(("lo", "hi", "want"), [(T0, T0 + 180, 3), (T0 + 1, T0 + 180, 2), (T0, T0 + 181, 4)])
def test_the_window_holds_the_aligned_intervals_that_start_in_it(lo: int, hi: int, want: int) -> None:
    assert len(intervals(lo, hi, step=STEP)) == want
    assert all(t % STEP == 0 for t in intervals(lo, hi, step=STEP))


def test_the_step_is_the_shortest_report_interval() -> None:
    assert step_of(report(T0, seconds=300) + report(T0 + 300), default=7) == STEP
    assert step_of([], default=7) == 7


def test_every_subset_of_reported_intervals_gets_the_obvious_verdicts() -> None:
    # exhaustive over 6 intervals: reported ones complete, the others silent (spans start at their own
    # interval, so nothing covers a gap); the window is whole only when all are reported
    # (before the first report: not yet metered, not judged; no report at all: silent throughout)
    for mask in itertools.product((False, True), repeat=6):
        rows = [r for i, on in enumerate(mask) if on for r in report(T0 + i * STEP)]
        verdicts = classify(rows, nodes=("n1",), start=T0, end=T0 + 6 * STEP, step=STEP)
        first = mask.index(True) if any(mask) else 0
        expected = [NOT_YET] * first + [COMPLETE if on else SILENT for on in mask[first:]]
        assert [v.state for v in verdicts] == expected
        assert whole(verdicts) == all(mask[first:])


def test_a_node_that_joins_mid_window_is_not_silent_before_its_first_report() -> None:
    rows = [r for i in (2, 3, 4) for r in report(T0 + i * STEP)]
    verdicts = classify(rows, nodes=("n1",), start=T0, end=T0 + 5 * STEP, step=STEP)
    assert [v.state for v in verdicts] == [NOT_YET, NOT_YET, COMPLETE, COMPLETE, COMPLETE]
    assert whole(verdicts)
    line = summary(verdicts)
    assert line == "3 of 3 node-intervals complete (2 before a node's first report, not judged)"
    # a report read from before the window (within the reach) makes an early gap silent again
    earlier = report(T0 - 2 * STEP) + rows
    assert states(earlier)[:2] == [SILENT, SILENT]


def test_summary_names_the_gaps() -> None:
    rows = [r for r in steady() if r.start not in (T0 + 2 * STEP, T0 + 3 * STEP)]
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP)
    assert runs(verdicts) == [("n1", SILENT, T0 + 2 * STEP, T0 + 4 * STEP)]
    line = summary(verdicts)
    assert line.startswith("3 of 5 node-intervals complete; n1 silent ")
    assert not whole(verdicts)


def test_summary_of_a_whole_window_counts_catch_ups() -> None:
    crash_ms = (T0 + 10) * 1000
    rows = report(T0, span=(T0 * 1000, crash_ms))
    rows += report(T0 + 2 * STEP, span=(crash_ms, (T0 + 3 * STEP) * 1000))
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 3 * STEP, step=STEP)
    assert summary(verdicts) == "3 of 3 node-intervals complete (1 covered later by a catch-up report)"
    assert whole(verdicts)


def test_an_unsettled_interval_is_judged_only_when_complete() -> None:
    """Right after a clean stop: the cut interval's report is stored whole, so it is complete at once;
    the next interval, with no report yet, is not settled rather than silent."""
    stop_ms = (T0 + 2 * STEP + 25) * 1000
    rows = report(T0) + report(T0 + STEP) + report(T0 + 2 * STEP, span=((T0 + 2 * STEP) * 1000, stop_ms))
    rows += report(T0 + 3 * STEP, chunks=2, present=(0,))  # its second chunk may still be on its way
    settled = T0 + 2 * STEP  # now is two minutes after the end of the second interval
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP, settled=settled)
    assert [v.state for v in verdicts] == [COMPLETE, COMPLETE, COMPLETE, NOT_SETTLED, NOT_SETTLED]
    assert judged(verdicts) == 3 and whole(verdicts)
    assert summary(verdicts) == "3 of 3 node-intervals complete (2 not settled yet, not judged)"
    # once settled, the same evidence is judged as before
    assert states(rows) == [COMPLETE, COMPLETE, COMPLETE, PARTIAL, SILENT]


def test_a_settled_interval_without_a_report_is_still_silent() -> None:
    rows = report(T0)
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 3 * STEP, step=STEP, settled=T0 + 2 * STEP)
    assert [v.state for v in verdicts] == [COMPLETE, SILENT, NOT_SETTLED]
    assert not whole(verdicts)


def test_nothing_judged_says_so_instead_of_zero_of_zero() -> None:
    assert judged([]) == 0 and summary([]) == "no node-interval to judge"


def test_a_rejected_report_makes_its_interval_rejected_whatever_else_is_there() -> None:
    refused = [
        replace(r, rejected="counter") for r in report(T0 + STEP, seq=99, span=((T0 + STEP) * 1000,) * 2)
    ]
    rows = steady() + refused
    verdicts = classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP)
    assert [v.state for v in verdicts] == [COMPLETE, REJECTED, COMPLETE, COMPLETE, COMPLETE]
    assert verdicts[1].reasons == ("counter",) and not whole(verdicts)
    assert "n1 rejected" in summary(verdicts) and "(rejected: counter)" in summary(verdicts)
    # alone (the interval's own report never came), a refused row is still rejected, never silent
    alone = [r for r in steady() if r.start != T0 + 2 * STEP] + [
        replace(r, rejected="future", start=T0 + 2 * STEP) for r in refused
    ]
    assert states(alone) == [COMPLETE, COMPLETE, REJECTED, COMPLETE, COMPLETE]


def test_timestamps_off_makes_an_interval_at_risk_unless_accepted() -> None:
    rows = steady(2) + report(T0 + 2 * STEP, stamps=0) + report(T0 + 3 * STEP, stamps=-1) + steady(5)[4:]
    assert states(rows) == [COMPLETE, COMPLETE, AT_RISK, COMPLETE, COMPLETE]  # -1: not said, not judged
    accepted = classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP, accept_no_timestamps=True)
    assert [v.state for v in accepted] == [COMPLETE] * 5 and whole(accepted)
    assert not whole(classify(rows, nodes=(), start=T0, end=T0 + 5 * STEP, step=STEP))


def test_lossy_and_partial_win_over_at_risk_and_a_catch_up_without_timestamps_puts_its_span_at_risk() -> None:
    assert states(
        report(T0, stamps=0, lost=1) + report(T0 + STEP, stamps=0, chunks=2, present=(0,)), n=2
    ) == [
        LOSSY,
        PARTIAL,
    ]
    catch_up = report(
        T0 + 3 * STEP, seconds=STEP, span=((T0 + STEP) * 1000, (T0 + 4 * STEP) * 1000), stamps=0
    )
    assert states(report(T0) + catch_up, n=4) == [COMPLETE, AT_RISK, AT_RISK, AT_RISK]
