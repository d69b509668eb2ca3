"""The agent as a process: published deltas sum to the kernel's own counters, exactly, through interval
boundaries, a broker outage, SIGKILLs at random moments, SIGTERM mid-interval and a malformed state file."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import NatsServer
from tests.fixtures.lab import Lab, Node, Pod
from tests.fixtures.lab_traffic import Flow, TcpClient, UdpClient
from tests.fixtures.nats import nats_settings_for
from tests.support.agent import AgentProcess, identities, read_raw, totals, wait_exact
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns
Start = Callable[..., AgentProcess]


def cluster(lab: Lab) -> tuple[Node, Pod, Pod, Pod]:
    node = lab.node("n1")
    return node, lab.pod("p1", node=node), lab.pod("p2", node=node), lab.pod("p3", node=node, ct_zone=5)


def open_flows(client: Pod, a: Pod, b: Pod) -> list[TcpClient | UdpClient]:
    """Long-lived flows: TCP and UDP, IPv4 and IPv6, one of each pair in conntrack zone 5."""
    return [
        client.tcp_connect(a.server("tcp", family=4)),
        client.tcp_connect(b.server("tcp", family=6)),
        client.udp_client(b.server("udp", family=4)),
        client.udp_client(a.server("udp", family=6)),
    ]


def exchange(conns: list[TcpClient | UdpClient], rng: random.Random) -> None:
    for conn in conns:
        conn.exchange(rng.randint(8, 20_000), rng.randint(1, 60_000) if isinstance(conn, TcpClient) else 900)


def next_boundary(interval: int) -> float:
    return (time.time() // interval + 1) * interval


def assert_no_duplicates(messages: list) -> None:  # type: ignore[type-arg]
    assert len({m.msg_id for m in messages}) == len(messages)
    assert max(identities(messages).values(), default=1) == 1


def test_known_traffic_over_several_intervals_is_exact(
    lab: Lab, nats_server: NatsServer, start_agent: Start
) -> None:
    node, client, a, b = cluster(lab)
    watch = node.destroy_watch()
    nats = nats_settings_for(nats_server)
    agent = start_agent(node, nats)
    agent.polled_after(time.time())  # running before the traffic starts
    conns = open_flows(client, a, b)
    rng = random.Random(1)
    for _ in range(3):  # traffic in at least three intervals
        exchange(conns, rng)
        agent.polled_after(next_boundary(agent.interval))
    short = client.tcp_connect(a.server("tcp"))
    short.exchange(5000, 5000)
    deleted = short.close()
    gone = node.find(deleted)
    node.delete_flow(deleted)  # a DESTROY event carries its last counters
    watch.wait_for(lambda e: e.id == gone.id)
    flows: list[Flow] = [c.close() for c in conns[:1]] + [c.flow for c in conns[1:]] + [deleted]
    messages = wait_exact(node, nats, flows, watch.snapshot)
    assert agent.probe("/healthz") == agent.probe("/readyz") == 200
    agent.polled_after(time.time() + 2 * agent.interval)  # later polls add nothing
    assert totals(read_raw(nats)) == totals(messages)
    assert agent.stop() == 0
    messages = read_raw(nats)
    assert_no_duplicates(messages)
    wait_exact(node, nats, flows, watch.snapshot, timeout=1)
    starts = {m.start for m in messages for r in m.rows if r.orig_sport == conns[1].flow.sport}
    assert len(starts) >= 3 and all(
        m.seconds == agent.interval and m.start % agent.interval == 0 for m in messages
    )


def test_broker_outage_of_two_intervals(
    lab: Lab, make_nats_server: Callable[..., NatsServer], start_agent: Start, tmp_path: Path
) -> None:
    node, client, a, b = cluster(lab)
    server = make_nats_server()
    nats = nats_settings_for(server)
    state = tmp_path / "state"
    agent = start_agent(node, nats, state_dir=state, extra=("--drain-timeout", "3s"))
    conns = open_flows(client, a, b)
    rng = random.Random(2)
    exchange(conns, rng)
    wait_exact(node, nats, [c.flow for c in conns], list)
    server.stop()
    for _ in range(2):  # two intervals with the broker down, while connected (the client buffers)...
        exchange(conns, rng)
        agent.polled_after(next_boundary(agent.interval))
    assert agent.metrics()["kubenetmon_agent_backlog_reports"] >= 2
    assert agent.stop() == 0  # ...then a restart that never reaches the broker: the backlog is on disk
    agent = start_agent(node, nats, state_dir=state)
    for _ in range(2):
        exchange(conns, rng)
        agent.polled_after(next_boundary(agent.interval))
    assert agent.metrics()["kubenetmon_agent_backlog_reports"] >= 3
    server.start()
    exchange(conns, rng)
    messages = wait_exact(node, nats, [c.flow for c in conns], list)
    assert_no_duplicates(messages)
    wait_until(
        lambda: agent.metrics()["kubenetmon_agent_backlog_reports"] == 0, timeout=10, what="no backlog"
    )
    assert agent.stop() == 0


def test_sigkill_at_random_moments_five_times(
    lab: Lab, nats_server: NatsServer, start_agent: Start, tmp_path: Path
) -> None:
    node, client, a, b = cluster(lab)
    nats = nats_settings_for(nats_server)
    state = tmp_path / "state"
    conns = open_flows(client, a, b)
    rng = random.Random(3)
    for _ in range(5):
        agent = start_agent(node, nats, state_dir=state)
        exchange(conns, rng)
        agent.polled_after(time.time())
        exchange(conns, rng)
        time.sleep(rng.uniform(0, 1.5))  # fault injection: the kill lands anywhere in a poll or a publish
        agent.stop(signal.SIGKILL)
        exchange(conns, rng)  # while the agent is down
    agent = start_agent(node, nats, state_dir=state)
    flows = [c.close() for c in conns]
    messages = wait_exact(node, nats, flows, list)
    assert_no_duplicates(messages)
    assert agent.stop() == 0


def test_sigterm_mid_interval_reports_the_part_and_resumes(
    lab: Lab, nats_server: NatsServer, start_agent: Start, tmp_path: Path
) -> None:
    node, client, a, b = cluster(lab)
    nats = nats_settings_for(nats_server)
    state = tmp_path / "state"
    conns = open_flows(client, a, b)
    rng = random.Random(4)
    for _ in range(2):
        agent = start_agent(node, nats, state_dir=state, interval=3600)
        exchange(conns, rng)
        agent.polled_after(time.time())
        assert agent.stop() == 0  # publishes the partial interval before exiting
    messages = wait_exact(node, nats, [c.flow for c in conns], list, timeout=1)
    assert len({m.seq for m in messages}) >= 2 and len({m.start for m in messages}) <= 2
    assert_no_duplicates(messages)


def test_malformed_state_file_starts_fresh(
    lab: Lab, nats_server: NatsServer, start_agent: Start, tmp_path: Path
) -> None:
    node, client, a, b = cluster(lab)
    nats = nats_settings_for(nats_server)
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.msgpack").write_bytes(b"\x93not a state file")
    conns = open_flows(client, a, b)
    exchange(conns, random.Random(5))
    agent = start_agent(node, nats, state_dir=state)
    wait_exact(node, nats, [c.flow for c in conns], list)
    assert "moved it to" in agent.output() and list(state.glob("state.msgpack.bad-*"))
    assert agent.stop() == 0
    again = start_agent(node, nats, state_dir=state)
    exchange(conns, random.Random(6))
    wait_exact(node, nats, [c.flow for c in conns], list)
    assert again.stop() == 0 and "resumed from state" in again.output()


def test_accounting_off_is_refused_with_how_to_fix_it(
    lab: Lab, nats_server: NatsServer, start_agent: Start
) -> None:
    node = lab.node("n1")
    node.sysctl("net/netfilter/nf_conntrack_acct", 0)
    nats = nats_settings_for(nats_server)
    refused = start_agent(node, nats, extra=("--young-node", "0"))
    assert refused.proc is not None and refused.proc.wait(30) == 2
    out = refused.output()
    assert "conntrack accounting is off" in out and "--skip-sanity-check" in out
    # the fix for the namespace it meters, not a host-wide sysctl
    assert f"`ip netns exec {node.netns} sysctl -w net.netfilter.nf_conntrack_acct=1`" in out
    forced = start_agent(node, nats, extra=("--young-node", "0", "--skip-sanity-check"))
    forced.polled_after(time.time())
    assert forced.stop() == 0
    assert "--skip-sanity-check: conntrack accounting is off" in forced.output()
