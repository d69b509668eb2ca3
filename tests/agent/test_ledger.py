"""The agent's ledger: every interval reported (rows or not), spans that chain poll to poll and reach
back over a crash, and the events lost and table drops of each span (scripted kernel and broker)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from kubenetmon.agent import reports
from kubenetmon.agent.service import Agent
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import decode_raw
from tests.support.agent_fakes import Broker, Clock, Kernel, make, publish_all, run_minutes


def ledgers(agent: Agent) -> list[tuple[int, Ledger]]:
    out = []
    for report in agent.pending:
        ledger = decode_raw(report.chunks[0]).ledger
        assert ledger is not None
        out.append((report.start, ledger))
    return out


def test_an_idle_interval_still_gets_a_report(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(flows=0), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 3)
    assert [(r.rows, len(r.chunks)) for r in agent.pending] == [(0, 1)] * 3
    publish_all(agent)
    assert len(broker.got) == 3 and all(decode_raw(c).rows == [] for c in broker.got.values())


def test_spans_chain_from_poll_to_poll_and_totals_match_the_rows(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 4)
    found = ledgers(agent)
    assert len(found) == 4
    for (_, older), (_, newer) in itertools.pairwise(found):
        assert older.span_to_ms == newer.span_from_ms  # no gap, no overlap
    for report, (start, ledger) in zip(agent.pending, found, strict=True):
        rows = reports.rows_of(report)
        assert ledger.rows == len(rows) == 3
        assert ledger.bytes == sum(r.orig_bytes + r.reply_bytes for r in rows) > 0
        assert ledger.packets == sum(r.orig_packets + r.reply_packets for r in rows) > 0
        assert ledger.flows == 3 and ledger.events_lost == ledger.table_drops == 0
        # the report's last poll is the one that found its interval over
        assert start * 1000 < ledger.span_to_ms <= (start + 60 + 5) * 1000


def test_events_lost_and_table_drops_land_in_the_span_they_happened_in(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 1)
    kernel.drops += 7
    kernel.overruns += 2
    run_minutes(agent, kernel, clock, 2)
    losses = [(ledger.events_lost, ledger.table_drops) for _, ledger in ledgers(agent)]
    assert losses == [(0, 0), (2, 7), (0, 0)]


def test_after_a_crash_the_next_report_spans_the_outage(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 2)
    publish_all(agent)
    clock.now += 20
    agent.tick()  # the last checkpointed poll before the crash
    crashed_at_ms = int(clock.now * 1000)
    kernel.drops += 4  # while the agent is down
    clock.now += 150  # two whole intervals later (no SIGTERM: nothing more was cut)
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 1)
    found = ledgers(agent)
    # the interval the crash interrupted is reported at start; the next report reaches back to the crash
    assert found[0][1].span_to_ms == crashed_at_ms
    catch_up = found[1][1]
    assert catch_up.span_from_ms == crashed_at_ms and catch_up.table_drops == 4
    assert catch_up.span_to_ms - catch_up.span_from_ms > 2 * 60_000


def test_a_nearly_full_table_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kernel, broker, clock = Kernel(flows=10), Broker(), Clock()
    kernel.max_entries = 10
    agent = make(tmp_path, kernel, broker, clock)
    with caplog.at_level(logging.WARNING, logger="kubenetmon.agent.service"):
        run_minutes(agent, kernel, clock, 1)
    assert [r.message for r in caplog.records].count(
        "conntrack table over 90% full: new connections will be dropped and not metered"
    ) == 1


def test_merged_reports_span_both_and_sum_their_losses(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock, max_backlog_reports=2)
    broker.down = True
    for _ in range(3):
        kernel.drops += 1
        run_minutes(agent, kernel, clock, 1)
    first, merged = (ledger for _, ledger in ledgers(agent))
    assert merged.span_from_ms == first.span_to_ms and merged.table_drops == 2
