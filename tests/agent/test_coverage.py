"""Source coverage against the real kernel: the ledger's link bytes (the node's external interface
counters) next to the bytes conntrack metered for flows crossing the node; traffic exempted from
conntrack by a NOTRACK rule shows up as uncovered, and ``check --coverage`` calls the node blind."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenetmon.shared.schema import decode_raw
from kubenetmon.writer.query import completeness as c
from kubenetmon.writer.query import coverage as cov
from tests.fixtures.lab import Lab
from tests.support.agent_lab import Probe

pytestmark = pytest.mark.netns


def test_tracked_traffic_is_covered(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("n1")
    pod = lab.pod("p", node=node)
    ext = lab.external("net", ipv4="203.0.113.7", ipv6="2001:db8::7")
    probe = Probe(node, tmp_path)
    try:
        server = ext.server("tcp")
        conn = pod.tcp_connect(server)
        conn.exchange(300_000, 3_000_000)
        flow = conn.close()
        ledger = probe.cut()
        kernel = node.find(flow).counters
    finally:
        probe.close()
    assert ledger.link_bytes > 3_300_000 and ledger.boundary_bytes >= kernel[1] + kernel[3]
    assert ledger.boundary_bytes == ledger.bytes  # every row of this report crossed the node boundary
    print(f"link {ledger.link_bytes} metered {ledger.boundary_bytes} kernel {kernel}")
    assert 0.9 < ledger.boundary_bytes / ledger.link_bytes <= 1.0  # frames carry their Ethernet header


def test_pod_to_pod_traffic_on_the_node_crosses_nothing(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("n1")
    a, b = lab.pod("a", node=node), lab.pod("b", node=node)
    probe = Probe(node, tmp_path)
    try:
        conn = a.tcp_connect(b.server("tcp"))
        conn.exchange(100_000, 1_000_000)
        conn.close()
        ledger = probe.cut()
    finally:
        probe.close()
    assert ledger.bytes > 1_100_000 and ledger.boundary_bytes == 0
    assert ledger.link_bytes < 20_000  # the external interface saw no more than neighbour chatter


def test_notrack_traffic_is_flagged_uncovered_with_its_size(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("n1")
    pod = lab.pod("p", node=node)
    seen = lab.external("seen", ipv4="203.0.113.7", ipv6="2001:db8::7")
    hidden = lab.external("hidden", ipv4="203.0.113.8", ipv6="2001:db8::8")
    node.nft(
        "add rule inet kubenetmon_lab raw_pre ip daddr 203.0.113.8 notrack\n"
        "add rule inet kubenetmon_lab raw_pre ip saddr 203.0.113.8 notrack\n"
    )
    probe = Probe(node, tmp_path)
    try:
        tracked = pod.tcp_connect(seen.server("tcp"))
        tracked.exchange(20_000, 200_000)
        tracked.close()
        untracked = pod.tcp_connect(hidden.server("tcp"))
        untracked.exchange(500_000, 5_000_000)
        untracked.close()
        ledger = probe.cut()
    finally:
        probe.close()
    uncovered = ledger.link_bytes - ledger.boundary_bytes
    print(f"link {ledger.link_bytes} metered {ledger.boundary_bytes} uncovered {uncovered}")
    assert 220_000 <= ledger.boundary_bytes < 300_000  # only the tracked flow (payload plus headers)
    assert 5_500_000 <= uncovered < 6_500_000  # the NOTRACK flow: its payload plus its headers
    # check --coverage on this ledger: the node-interval is blind
    start = decode_raw(probe.agent.pending[-1].chunks[0]).start
    row = c.ChunkRow(
        "n1", "boot-lab", 0, start, 60, 0, 1, ledger.span_from_ms, ledger.span_to_ms,
        link_bytes=ledger.link_bytes, boundary_bytes=ledger.boundary_bytes,
    )  # fmt: skip
    (verdict,) = c.classify([row], nodes=["n1"], start=start, end=start + 60, step=60)
    assert verdict.coverage is not None and verdict.coverage < 0.05
    assert cov.blind([verdict]) == [verdict]
    assert "n1 blind (coverage 0.04)" in cov.summary([verdict])
