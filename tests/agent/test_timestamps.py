"""Whether conntrack stamps creation times, as the agent reports it: the gauge
``kubenetmon_agent_conntrack_timestamps_enabled`` and the ledger's ``timestamps`` of every report.

With the real kernel in a lab namespace (the sysctl turned off and on in that namespace only, while the
agent runs), and with a scripted kernel for the span arithmetic (a span with one poll without timestamps
says 0; a merged report is off if either part was; the open span survives a restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.agent.conntrack import Conntrack
from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.ledger import TIMESTAMPS_UNKNOWN
from kubenetmon.shared.schema import decode_raw
from tests.fixtures.lab import Lab
from tests.fixtures.nats import nats_settings_for
from tests.support.agent import AgentProcess, read_raw
from tests.support.agent_fakes import Broker, Clock, Kernel, make, run_minutes
from tests.support.waiting import wait_until

STAMP = "net/netfilter/nf_conntrack_timestamp"
GAUGE = "kubenetmon_agent_conntrack_timestamps_enabled"


@pytest.mark.netns
def test_conntrack_reads_the_namespace_s_own_sysctl(lab: Lab) -> None:
    node = lab.node("ts-a")
    conntrack = Conntrack(netns=node.netns, events=False)
    try:
        for value in (0, 1, 0):
            node.sysctl(STAMP, value)
            assert conntrack.timestamps() is bool(value)
    finally:
        conntrack.close()


@pytest.mark.netns
def test_the_agent_reports_timestamps_off_and_on_in_its_namespace(
    lab: Lab, nats_server: NatsServer, start_agent: Callable[..., AgentProcess]
) -> None:
    node = lab.node("ts-b")
    nats = nats_settings_for(nats_server)
    agent = start_agent(node, nats)
    wait_until(lambda: agent.metrics().get(GAUGE) == 1.0, timeout=30, what="the gauge at 1 (on at start)")

    node.sysctl(STAMP, 0)  # what a node without the sysctl in its bootstrap looks like
    off_at = time.time()
    wait_until(lambda: agent.metrics().get(GAUGE) == 0.0, timeout=30, what="the gauge at 0")
    wait_until(
        lambda: any(m.ledger and m.ledger.timestamps == 0 for m in read_raw(nats)),
        timeout=30,
        what="a report saying timestamps were off",
    )
    node.sysctl(STAMP, 1)
    on_at = time.time()
    wait_until(lambda: agent.metrics().get(GAUGE) == 1.0, timeout=30, what="the gauge at 1 again")

    def stamped_again() -> bool:
        return any(
            m.ledger and m.ledger.timestamps == 1 and m.ledger.span_from_ms > on_at * 1000
            for m in read_raw(nats)
        )

    wait_until(stamped_again, timeout=30, what="a report of a whole span with timestamps on")
    ledgers = [m.ledger for m in read_raw(nats) if m.ledger is not None]
    assert all(g.timestamps in (0, 1) for g in ledgers)
    # every span that reaches into the time it was off says so
    for g in ledgers:
        if g.span_from_ms < off_at * 1000 < on_at * 1000 < g.span_to_ms:
            assert g.timestamps == 0


def test_a_span_with_one_poll_without_timestamps_says_so_and_the_next_does_not(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 1)
    kernel.stamps = False
    agent.tick()  # one poll of the second interval without them
    kernel.stamps = True
    run_minutes(agent, kernel, clock, 2)
    kernel.stamps = None  # unreadable (no conntrack sysctl): not said
    run_minutes(agent, kernel, clock, 1)
    found = [decode_raw(r.chunks[0]).ledger for r in agent.pending]
    assert [g.timestamps for g in found if g is not None] == [1, 0, 1, TIMESTAMPS_UNKNOWN]


def test_the_open_span_s_state_survives_a_restart_and_a_merge_keeps_off(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock, max_backlog_reports=2)
    broker.down = True
    run_minutes(agent, kernel, clock, 1)
    kernel.stamps = False
    clock.now += 10
    agent.tick()  # checkpointed with the open span off
    kernel.stamps = True
    agent = make(tmp_path, kernel, broker, clock, max_backlog_reports=2)  # restarted (a crash)
    run_minutes(agent, kernel, clock, 3)  # merged: the backlog holds two reports
    found = [decode_raw(r.chunks[0]).ledger for r in agent.pending]
    # the first interval, on throughout; then the merge of the interval the restart fell in (off at one
    # poll, carried over the restart by the checkpoint) with the later ones (on): off
    assert [(r.seconds, g.timestamps) for r, g in zip(agent.pending, found, strict=True) if g] == [
        (60, 1),
        (180, 0),
    ]
