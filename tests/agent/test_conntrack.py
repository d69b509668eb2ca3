"""The agent's reader on real kernel conntrack: dumps agree with conntrack-tools, DESTROY events carry the
final counters of flows no dump ever saw, and an event overrun is counted, never fatal."""

from __future__ import annotations

import json
import subprocess

import pytest

from kubenetmon.agent.conntrack import Conntrack
from kubenetmon.agent.ctnetlink import INSTANCE, counters, decode_key, row_key
from kubenetmon.agent.flows import FlowTable, fold, unpack
from tests.fixtures.lab import Lab, Node
from tests.fixtures.lab_kernel import CtEntry
from tests.fixtures.lab_traffic import Flow
from tests.support import commands
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns


def kubenetmon(*args: str) -> subprocess.CompletedProcess[str]:
    return commands.kubenetmon(*args, timeout=60)


def stable_table(node: Node) -> list[CtEntry]:
    """The node's table once two reads in a row agree (in-flight ACKs have landed)."""
    reads: list[list[CtEntry]] = [[]]

    def settled() -> bool:
        reads.append(sorted(node.conntrack_table(), key=lambda e: e.id))
        return reads[-1] == reads[-2]

    wait_until(settled, timeout=10, what="a stable conntrack table")
    return reads[-1]


def test_dump_json_equals_conntrack_tools(lab: Lab) -> None:
    node = lab.node("n1")
    client = lab.pod("p1", node=node)
    plain, zoned = lab.pod("p2", node=node), lab.pod("p3", node=node, ct_zone=9, ct_mark=0x2A)
    for family in (4, 6):
        for server in (plain, zoned):
            conn = client.tcp_connect(server.server("tcp", family=family))
            conn.exchange(3000, 40_000)
            client.udp_client(server.server("udp", family=family)).exchange(200, 2500)
        closed = client.tcp_connect(plain.server("tcp", family=family))
        closed.exchange(10, 10)
        closed.close()
    expected = stable_table(node)
    result = kubenetmon("conntrack", "dump", "--netns", node.netns, "--format", "json")
    assert result.returncode == 0, result.stderr
    dumped = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(dumped) == len(expected) == 10
    by_id = {e.id: e for e in expected}
    for d in dumped:
        e = by_id[d["id"]]
        assert (d["family"], d["proto"], d["zone"], d["mark"], d["state"]) == (
            f"ipv{e.family}",
            e.proto,
            e.zone,
            e.mark,
            e.state,
        )
        assert (d["orig_src"], d["orig_dst"], d["orig_sport"], d["orig_dport"]) == e.orig
        assert (d["reply_src"], d["reply_dst"], d["reply_sport"], d["reply_dport"]) == e.reply
        assert (d["orig_packets"], d["orig_bytes"], d["reply_packets"], d["reply_bytes"]) == e.counters
    assert {e.zone for e in expected} == {0, 9} and {e.family for e in expected} == {4, 6}
    assert {e.proto for e in expected} == {"tcp", "udp"}
    summary = json.loads(kubenetmon("conntrack", "dump", "--netns", node.netns, "--summary").stdout)
    assert summary == {
        "entries": 10,
        **{
            k: sum(getattr(e, k) for e in expected)
            for k in ("orig_packets", "orig_bytes", "reply_packets", "reply_bytes")
        },
    }
    text = kubenetmon("conntrack", "dump", "--netns", node.netns).stdout.splitlines()
    assert len(text) == 10 and any("zone=9" in line and "ESTABLISHED" in line for line in text)


def test_dump_of_a_missing_namespace_is_a_clear_error() -> None:
    result = kubenetmon("conntrack", "dump", "--netns", "kubenetmon-no-such-netns")
    assert result.returncode == 2 and "does not exist" in result.stderr


class Meter:
    """The agent's poll, by hand: events, dump, events."""

    def __init__(self, node: Node, *, event_buffer: int = 1 << 20) -> None:
        self.conntrack = Conntrack(netns=node.netns, event_buffer=event_buffer)
        self.table = FlowTable()

    def poll(self) -> None:
        self.conntrack.read_events(self.table.destroy)
        self.table.begin_dump()
        self.conntrack.dump(self.table.observe)
        self.table.end_dump()
        self.conntrack.read_events(self.table.destroy)

    def measured(self, flow: Flow) -> tuple[int, int, int, int]:
        for key, value in fold(self.table.take()).items():
            f = decode_key(key + bytes(INSTANCE))
            if (f.orig_sport, f.orig_dport) == (flow.sport, flow.dport):
                return unpack(value)
        raise LookupError(flow)


@pytest.mark.parametrize(("proto", "family"), [("tcp", 4), ("udp", 6)])
def test_flow_opened_and_closed_between_polls_is_counted(lab: Lab, proto: str, family: int) -> None:
    node = lab.node("n1")
    client, server = lab.pod("p1", node=node), lab.pod("p2", node=node)
    watch = node.destroy_watch()
    meter = Meter(node)
    meter.poll()
    srv = server.server(proto, family=family)
    conn = client.tcp_connect(srv) if proto == "tcp" else client.udp_client(srv)
    conn.exchange(700, 9000)
    flow = conn.close()
    entry = node.find(flow)
    node.delete_flow(flow)
    final = watch.wait_for(lambda e: e.id == entry.id)
    meter.poll()
    assert meter.table.tracked == 0
    assert meter.measured(flow) == final.counters and final.orig_bytes > 700


def test_growth_between_polls_and_after_the_last_poll(lab: Lab) -> None:
    node = lab.node("n1")
    client, server = lab.pod("p1", node=node), lab.pod("p2", node=node, ct_zone=3)
    watch = node.destroy_watch()
    meter = Meter(node)
    conn = client.tcp_connect(server.server("tcp", family=6))
    conn.exchange(100, 100)
    meter.poll()
    first = meter.measured(conn.flow)
    conn.exchange(5000, 5000)
    meter.poll()
    second = meter.measured(conn.flow)
    conn.exchange(1, 70_000)
    flow = conn.close()
    entry = node.find(flow)
    node.delete_flow(flow)
    final = watch.wait_for(lambda e: e.id == entry.id)
    meter.poll()
    third = meter.measured(flow)
    assert tuple(map(sum, zip(first, second, third, strict=True))) == final.counters


def test_event_overrun_is_counted_not_fatal(lab: Lab) -> None:
    node = lab.node("n1")
    meter = Meter(node, event_buffer=65536)
    lines = "".join(
        f"-I -s 10.9.{i >> 8}.{i & 255} -d 10.8.0.1 -p udp --sport {1024 + i} --dport 53 -t 60\n"
        for i in range(3000)
    )
    node.run("conntrack", "-R", "-", stdin=lines)
    meter.poll()
    assert meter.table.tracked == 3000
    node.run("conntrack", "-F")
    seen: list[tuple[bytes, bytes]] = []
    meter.conntrack.read_events(seen.append)
    assert meter.conntrack.overruns >= 1 and meter.conntrack.resync_needed
    assert 0 < len(seen) < 3000
    assert all(counters(c) == (0, 0, 0, 0) and row_key(k) for k, c in seen)
