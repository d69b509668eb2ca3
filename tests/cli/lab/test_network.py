"""The conntrack lab itself: every flow it generates is in the kernel table, with counters that match
the payload it reports plus the per-packet headers the kernel counts (the ground truth of later tests)."""

from __future__ import annotations

import pytest

from tests.fixtures.lab import Lab
from tests.fixtures.lab_kernel import CtEntry

pytestmark = pytest.mark.netns

IP_HEADER = {4: 20, 6: 40}
TCP_HEADER = 32  # 20 bytes plus the timestamp option Linux sends on every segment
SYN_OPTIONS = 8  # a SYN or SYN-ACK carries 8 more option bytes than other segments (MSS, SACK-OK, wscale)
UDP_HEADER = 8


def tcp_overhead(family: int, packets: int) -> int:
    return packets * (IP_HEADER[family] + TCP_HEADER) + SYN_OPTIONS


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_flow_counters_are_payload_plus_headers(lab: Lab, family: int) -> None:
    node = lab.node("n1")
    client, server = lab.pod("p1", node=node), lab.pod("p2", node=node)
    conn = client.tcp_connect(server.server("tcp", family=family))
    conn.exchange(1000, 50_000)
    flow = conn.exchange(8, 70_000)
    conn.close()
    entry = node.find(flow)
    assert entry.family == family and entry.state == "TIME_WAIT"
    assert entry.orig_bytes == flow.sent + tcp_overhead(family, entry.orig_packets)
    assert entry.reply_bytes == flow.received + tcp_overhead(family, entry.reply_packets)
    assert entry.orig_bytes > flow.sent > 0 and entry.reply_bytes > flow.received > 0


@pytest.mark.parametrize("family", [4, 6])
def test_udp_flow_counters_are_exact(lab: Lab, family: int) -> None:
    node = lab.node("n1")
    client, server = lab.pod("p1", node=node), lab.pod("p2", node=node)
    udp = client.udp_client(server.server("udp", family=family))
    udp.exchange(100, 3000)
    flow = udp.exchange(1200, 10)
    entry = node.find(flow)
    assert (entry.orig_packets, entry.reply_packets) == (flow.up_datagrams, flow.down_datagrams) == (2, 4)
    assert entry.orig_bytes == flow.sent + flow.up_datagrams * (IP_HEADER[family] + UDP_HEADER)
    assert entry.reply_bytes == flow.received + flow.down_datagrams * (IP_HEADER[family] + UDP_HEADER)


def test_cross_node_flow_is_seen_by_both_nodes_with_zone_and_mark(lab: Lab) -> None:
    n1, n2 = lab.node("n1"), lab.node("n2")
    client = lab.pod("p1", node=n1)
    server = lab.pod("p2", node=n2, ct_zone=7, ct_mark=5)
    for family in (4, 6):
        conn = client.tcp_connect(server.server("tcp", family=family))
        flow = conn.exchange(100, 100)
        conn.close()
        on_client_node, on_server_node = n1.find(flow), n2.find(flow)
        assert (on_client_node.zone, on_client_node.mark) == (0, 0)
        assert (on_server_node.zone, on_server_node.mark) == (7, 5)
        assert on_client_node.counters == on_server_node.counters


def test_masquerade_and_service_dnat_show_in_reply_tuples(lab: Lab) -> None:
    node = lab.node("n1", masquerade=True)
    client, backend = lab.pod("p1", node=node), lab.pod("p2", node=node)
    outside = lab.external("x")
    egress = client.tcp_connect(outside.server("tcp")).exchange(10, 10)
    entry = node.find(egress)
    assert entry.orig[1] == outside.ipv4 and entry.reply[1] == node.ipv4  # SNAT to the node
    srv = backend.server("tcp")
    lab.service("10.96.0.10", 80, backend=backend, backend_port=srv.port)
    flow = client.tcp_connect(srv, dst="10.96.0.10", dport=80).exchange(10, 10)
    entry = node.find(flow)
    assert entry.orig[1:4:2] == ("10.96.0.10", 80) and entry.reply[0:3:2] == (backend.ipv4, srv.port)


def test_destroy_watch_reports_final_counters(lab: Lab) -> None:
    node = lab.node("n1")
    client, server = lab.pod("p1", node=node), lab.pod("p2", node=node)
    watch = node.destroy_watch()
    udp = client.udp_client(server.server("udp", family=6))
    flow = udp.exchange(50, 50)
    before: CtEntry = node.find(flow)
    node.delete_flow(flow)
    final = watch.wait_for(lambda e: e.orig == before.orig)
    assert final.counters == before.counters and final.id == before.id
    assert all(e.orig != before.orig for e in node.conntrack_table())


@pytest.mark.parametrize("masquerade", [False, True])
def test_external_with_its_own_addresses(lab: Lab, masquerade: bool) -> None:
    node = lab.node("n1", masquerade=masquerade)
    pod = lab.pod("p1", node=node)
    outside = lab.external("x", ipv4="203.0.113.7", ipv6="2001:db8::7")
    for family in (4, 6):
        flow = pod.tcp_connect(outside.server("tcp", family=family)).exchange(10, 10)
        entry = node.find(flow)
        assert entry.orig[:2] == (pod.address(family), outside.address(family))
        assert entry.reply[1] == (node.address(family) if masquerade else pod.address(family))
        assert entry.orig_bytes > 10 and entry.reply_bytes > 10
