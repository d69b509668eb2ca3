"""The agent's state machine with a scripted kernel and broker (fakes of our own boundaries only):
interval cuts, the bounded backlog, resuming from state, a node reboot, oversized chunks, health."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kubenetmon.agent import reports
from kubenetmon.agent.checkpoint import StateDir
from kubenetmon.agent.sanity import check, off_message
from kubenetmon.agent.service import Agent
from kubenetmon.agent.settings import AgentSettings
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import MAX_INTERVAL_SECONDS
from tests.support.agent_fakes import Broker, Clock, Kernel, make, publish_all, run_minutes


def test_one_report_per_interval_aligned(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 3)
    assert [(r.start % 60, r.seconds) for r in agent.pending] == [(0, 60)] * 3
    assert len({r.seq for r in agent.pending}) == 3
    publish_all(agent)
    assert not agent.pending
    assert broker.total() + agent_open_bytes(agent) == sum(c[1] for c in kernel.counters.values())


def agent_open_bytes(agent: Agent) -> int:
    from kubenetmon.agent.flows import unpack

    return sum(unpack(v)[1] for v in agent.table.deltas.values())


def test_backlog_is_bounded_by_merging_and_loses_nothing(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock, max_backlog_reports=4)
    broker.down = True
    run_minutes(agent, kernel, clock, 2)
    assert not asyncio.run(agent.backlog.send_head())
    run_minutes(agent, kernel, clock, 10)
    assert len(agent.pending) == 4
    assert agent.pending[0].seconds == 60 and agent.pending[-1].seconds > 60
    assert len(StateDir(tmp_path).stored_reports()) == 4
    broker.down = False
    publish_all(agent)
    assert broker.total() + agent_open_bytes(agent) == sum(c[1] for c in kernel.counters.values())
    assert StateDir(tmp_path).stored_reports() == []


def test_a_day_long_outage_never_makes_a_record_longer_than_the_contract_allows(tmp_path: Path) -> None:
    # merging the newest reports for a day would make one span > 65535 s, a record every consumer
    # rejects (intervalSeconds is a UInt16): its bytes would end in the DLQ instead of the table
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock, max_backlog_reports=2)
    broker.down = True
    for _ in range(6 * 24):  # 24 hours, one poll every 10 minutes (each one closes an interval)
        kernel.grow()
        clock.now += 600
        agent.tick()
    spans = [r.seconds for r in agent.pending]
    assert max(spans) <= MAX_INTERVAL_SECONDS and len(agent.pending) == 3  # the backlog grew by one
    broker.down = False
    publish_all(agent)  # the fake broker decodes every chunk as a consumer would
    assert broker.total() + agent_open_bytes(agent) == sum(c[1] for c in kernel.counters.values())


def test_interval_longer_than_a_record_can_span_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="1 to 65535"):
        AgentSettings(node_name="n1", interval_s=86400, state_dir=str(tmp_path))


def test_restart_resumes_baselines_and_backlog(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    broker.down = True
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 2)
    kernel.grow(5000)  # while no agent runs
    clock.now += 30
    again = make(tmp_path, kernel, broker, clock)
    assert [r.seq for r in again.pending] == [r.seq for r in agent.pending]
    assert again.table.last == agent.table.last and again.next_seq == agent.next_seq
    run_minutes(again, kernel, clock, 1)
    broker.down = False
    publish_all(again)
    assert broker.total() + agent_open_bytes(again) == sum(c[1] for c in kernel.counters.values())


def test_ids_keep_their_key_across_restarts_and_only_a_first_offer_is_fresh(tmp_path: Path) -> None:
    """A duplicate ack means "id taken" only on a report's first offer: a retry, or a report adopted
    from disk (an earlier process may have sent it), may legitimately be a duplicate. A restarted agent
    draws a new key, but its stored reports keep theirs, so their retries are deduplicated."""
    kernel, broker, clock = Kernel(), Broker(), Clock()
    broker.down = True
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 2)
    keys = {r.seq: r.key for r in agent.pending}
    assert set(keys.values()) == {agent.id_key} and len(agent.id_key) == 32
    head = agent.pending[0].seq
    for _ in range(2):
        assert not asyncio.run(agent.backlog.send_head())
    assert broker.offers == [(head, True), (head, False)]
    again = make(tmp_path, kernel, broker, clock)
    assert again.id_key != agent.id_key
    assert {r.seq: r.key for r in again.pending} == keys
    assert all(r.msg_id(0).endswith("/" + r.key) for r in again.pending)
    run_minutes(again, kernel, clock, 1)
    broker.down, broker.offers = False, []
    publish_all(again)
    fresh = {seq: first for seq, first in broker.offers}
    assert fresh == {r: r not in keys for r in fresh} and any(fresh.values())


def test_reboot_drops_baselines_but_reports_old_deltas(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 1)
    kernel.grow()
    clock.now += 5
    agent.tick()
    opened = agent_open_bytes(agent)
    assert opened > 0
    rebooted = Kernel()
    again = make(tmp_path, rebooted, broker, clock, boot="boot-b")
    assert again.table.tracked == 0
    assert again.pending[-1].boot == "boot-a" and reports.rows_of(again.pending[-1])
    assert sum(r.orig_bytes for r in reports.rows_of(again.pending[-1])) == opened


def test_overdue_interval_is_reported_at_start(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    kernel.grow()
    agent.tick()
    clock.now += 3600
    again = make(tmp_path, kernel, broker, clock)
    assert len(again.pending) == 1 and again.pending[0].start == agent.interval_start


def test_oversized_chunks_are_split_under_new_seqs(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(flows=400), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock, max_message_bytes=8192)
    run_minutes(agent, kernel, clock, 1)
    [head] = agent.pending
    assert len(head.chunks) >= 3
    broker.oversized = [1]
    assert asyncio.run(agent.backlog.send_head())
    assert agent.pending[0].seq > head.seq and len(agent.pending[0].chunks) >= 2
    publish_all(agent)
    assert broker.total() + agent_open_bytes(agent) == sum(c[1] for c in kernel.counters.values())


def test_health_fails_when_polling_stalls(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    assert not agent.ready()
    agent.tick()
    assert agent.ready() and agent.healthy()
    agent.last_poll -= agent.settings.stall_after_s + 1
    assert not agent.healthy()


def test_sanity_check_refuses_waits_while_young_and_passes(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as refused:
        check(lambda path: "0", netns="ns1", young_node_s=600, node_uptime=lambda: 3600)
    assert str(refused.value) == off_message("0", netns="ns1")
    assert "`ip netns exec ns1 sysctl -w net.netfilter.nf_conntrack_acct=1`" in str(refused.value)
    values = iter(["0", "0", "1", "1", "1"])  # acct thrice, events, timestamps
    slept: list[float] = []
    with caplog.at_level(logging.WARNING):
        check(lambda path: next(values), young_node_s=600, node_uptime=lambda: 10, sleep=slept.append)
    assert len(slept) == 2 and "waiting" in caplog.text
    with pytest.raises(ConfigError, match="not available"):
        check(lambda path: "", young_node_s=600)
    with caplog.at_level(logging.WARNING):
        check(lambda path: "1" if path.endswith("acct") else "2", young_node_s=0)
    assert "nf_conntrack_events = 2" in caplog.text


def test_report_whose_state_was_not_saved_is_never_published(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 1)
    publish_all(agent)
    failing = StateDir(tmp_path)
    failing.save = lambda state: (_ for _ in ()).throw(OSError(28, "No space left on device"))  # type: ignore[method-assign]
    for _ in range(11):
        kernel.grow()
        clock.now += 5
        agent.tick()
    agent.state_dir = failing
    kernel.grow()
    clock.now += 5
    with pytest.raises(OSError):
        agent.tick()  # the interval is cut, but the state that lists its report is not saved
    assert agent.pending and agent.pending[0].seq not in agent.backlog.durable

    async def publish_briefly() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(agent.backlog.publish(stop))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(publish_briefly())
    assert len(broker.got) == 1  # only the first, saved, report
    again = make(tmp_path, kernel, broker, clock)  # what a restart finds: the last saved state
    run_minutes(again, kernel, clock, 1)
    publish_all(again)
    assert broker.total() + agent_open_bytes(again) == sum(c[1] for c in kernel.counters.values())


def test_crash_after_publish_before_checkpoint_republishes_identical_messages(tmp_path: Path) -> None:
    kernel, broker, clock = Kernel(), Broker(), Clock()
    agent = make(tmp_path, kernel, broker, clock)
    run_minutes(agent, kernel, clock, 2)
    first = dict(broker.got)
    failing = StateDir(tmp_path)
    failing.save = lambda state: (_ for _ in ()).throw(OSError(5, "crash"))  # type: ignore[method-assign]
    agent.state_dir = failing
    head = agent.pending[0]
    with pytest.raises(OSError):
        asyncio.run(agent.backlog.send_head())  # acknowledged, then the process dies before saving
    published = dict(broker.got)
    assert len(published) > len(first)
    again = make(tmp_path, kernel, broker, clock)
    assert [r.seq for r in again.pending] == [head.seq] + [r.seq for r in agent.pending]
    publish_all(again)
    assert {k: broker.got[k] for k in published} == published  # same ids, same bytes: deduplicated
    assert broker.total() + agent_open_bytes(again) == sum(c[1] for c in kernel.counters.values())


def test_creation_timestamps_are_turned_on_when_off() -> None:
    sysctls = {"net/netfilter/nf_conntrack_acct": "1", "net/netfilter/nf_conntrack_timestamp": "0"}
    check(lambda path: sysctls.get(path, "1"), young_node_s=0, write=sysctls.__setitem__)
    assert sysctls["net/netfilter/nf_conntrack_timestamp"] == "1"
