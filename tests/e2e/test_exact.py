"""End to end, exactly: known TCP and UDP traffic (IPv4 and IPv6) between pods on one node, across nodes and
zones, through a Service, to and from outside addresses; the whole pipeline as separate processes
(nats-server, or a three-node JetStream cluster, an agent per node, enricher, writer into chDB); then,
read through ``kubenetmon sql``, the stored bytes and packets of every flow, direction and label equal the
kernel's own counters, with no row missing and none extra. The nodes' own sockets (a process in node-a's
namespace, as a hostNetwork pod's) send known bytes to node-b and to the internet: the node table holds
exactly those flows, attributed to the nodes, and the pod rows and the README query do not change.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import DB_CT_ZONE, INTERNET, SERVICE, Cluster, add_service
from tests.e2e.expect import Totals, differences
from tests.e2e.fixtures import BROKERS, MakePipeline
from tests.e2e.harness import Options, Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns


def _servers(c: Cluster) -> dict[str, Any]:
    web1, db0 = c.pods["web-1"], c.pods["db-0"]
    servers = {
        "web-1 tcp4": web1.server("tcp", family=4),
        "web-1 udp6": web1.server("udp", family=6),
        "web-0 tcp4": c.pods["web-0"].server("tcp", family=4),
        "db-0 tcp6": db0.server("tcp", family=6),
        "db-0 udp4": db0.server("udp", family=4),
        "db-0 tcp4": db0.server("tcp", family=4),
        "service": db0.server("tcp", family=4),
        "internet tcp4": c.internet.server("tcp", family=4),
        "internet udp6": c.internet.server("udp", family=6),
        "s3 tcp6": c.s3.server("tcp", family=6),
        "s3 udp4": c.s3.server("udp", family=4),
        "node-b tcp4": c.nodes["node-b"].server("tcp", family=4),
        "internet udp4": c.internet.server("udp", family=4),
    }
    add_service(c, target_port=servers["service"].port)
    return servers


def _connect(c: Cluster, s: dict[str, Any]) -> dict[str, Any]:
    """Every kind of flow the labeling rules distinguish, opened by the side named first."""
    web0, web1, db0, node_a = c.pods["web-0"], c.pods["web-1"], c.pods["db-0"], c.nodes["node-a"]
    return {
        "web-0>web-1 tcp4 (same node)": web0.tcp_connect(s["web-1 tcp4"]),
        "web-0>web-1 udp6 (same node)": web0.udp_client(s["web-1 udp6"]),
        "web-0>db-0 tcp6 (across zones)": web0.tcp_connect(s["db-0 tcp6"]),
        "web-1>db-0 udp4 (across zones)": web1.udp_client(s["db-0 udp4"]),
        "db-0>web-0 tcp4 (across zones)": db0.tcp_connect(s["web-0 tcp4"]),
        "web-0>svc tcp4 (DNAT to db-0)": web0.tcp_connect(s["service"], dst=SERVICE[2], dport=SERVICE[3]),
        "web-1>internet tcp4 (masqueraded)": web1.tcp_connect(s["internet tcp4"]),
        "db-0>internet udp6": db0.udp_client(s["internet udp6"]),
        "web-0>s3 tcp6": web0.tcp_connect(s["s3 tcp6"]),
        "db-0>s3 udp4": db0.udp_client(s["s3 udp4"]),
        "internet>db-0 tcp4 (ingress)": c.internet.tcp_connect(s["db-0 tcp4"]),
        "node-a>db-0 tcp4 (node flow)": node_a.tcp_connect(s["db-0 tcp4"]),
        # the node's own sockets (a hostNetwork process): to another node, and out of the cluster
        "node-a>node-b tcp4 (node's own)": node_a.tcp_connect(s["node-b tcp4"]),
        "node-a>internet udp4 (node's own)": node_a.udp_client(s["internet udp4"]),
    }


def _payload(i: int, round_: int) -> tuple[int, int]:
    """Bytes the ``i``-th connection sends and receives in a round."""
    return 100 * (i + 1) + 7 * round_, 1000 * (i + 3) + 13 * round_


def _exchange(conns: dict[str, Any], round_: int) -> None:
    for i, conn in enumerate(conns.values()):
        conn.exchange(*_payload(i, round_))


def _by_label(totals: Totals) -> Counter[tuple[Any, ...]]:
    """Bytes per (observer, local pod, remote pod or ip, direction, class, crossZone)."""
    out: Counter[tuple[Any, ...]] = Counter()
    for k, (nbytes, _) in totals.items():
        remote = k.remote_pod or k.remote_ip
        out[(k.observer, k.local_pod, remote, k.direction, k.cls, k.cross_zone)] += nbytes
    return out


def _check_derivation(want: Totals, cluster: Cluster) -> None:
    """The expected rows themselves say what the rules say (a wrong derivation must not pass)."""
    labels = set(_by_label(want))
    rows_per_flow = Counter((k.observer, k.proto, k.local_ip, k.local_port, k.remote_ip) for k in want)
    # intra-node: once, from the opener's side
    assert ("node-a", "web-0", "web-1", "out", "INTRA_VPC", False) in labels
    assert ("node-a", "web-1", "web-0", "out", "INTRA_VPC", False) not in labels
    assert ("node-a", "web-0", "db-0", "out", "INTRA_VPC", True) in labels  # across nodes: both observers
    assert ("node-b", "db-0", "web-0", "in", "INTRA_VPC", True) in labels
    assert ("node-a", "web-1", "203.0.113.7", "out", "PUBLIC_INTERNET", False) in labels
    assert ("node-a", "web-0", "2001:db8:5::7", "out", "INTRA_REGION", False) in labels  # s3 range in zone-a
    assert ("node-b", "db-0", "198.51.100.7", "out", "INTRA_REGION", True) in labels
    assert ("node-b", "db-0", "203.0.113.7", "in", "PUBLIC_INTERNET", False) in labels  # ingress
    assert all(k.local_pod != "" for k in want)  # every row has a local pod here
    node_ip = cluster.nodes["node-a"].ipv4
    assert not any(node_ip in (k.local_ip, k.remote_ip) for k in want)  # the node flow is dropped
    assert {k.remote_service for k in want} == {"", f"{SERVICE[0]}/{SERVICE[1]}"}
    assert set(rows_per_flow.values()) == {2}  # out and in, per flow and observer


@pytest.mark.parametrize("broker", BROKERS)
def test_stored_rows_equal_the_kernels_counters(
    broker: str, cluster: Cluster, make_pipeline: MakePipeline
) -> None:
    servers = _servers(cluster)
    pipeline = make_pipeline(Options(broker=broker))
    conns = _connect(cluster, servers)
    _exchange(conns, 1)
    # a second interval: wait until the first one's rows are stored, then move more bytes
    wait_until(lambda: pipeline.stored() != {}, timeout=60, what="the first interval's rows", step=0.5)
    _exchange(conns, 2)
    # a flow that ends between polls: its bytes come from the DESTROY event; the tuple is used again after
    udp = conns["web-0>web-1 udp6 (same node)"]
    cluster.nodes["node-a"].delete_flow(udp.flow)
    _exchange({"again": udp}, 3)
    for conn in conns.values():
        conn.close()
    pipeline.wait_quiet()
    pipeline.stop_agents()

    want = pipeline.expected()
    _check_derivation(want, cluster)
    got = pipeline.wait_until_stored(want)
    diff = differences(want, got)
    assert not diff, "stored rows differ from the kernel's counters:\n" + "\n".join(diff)
    assert pipeline.backlog()["dlq"] == 0
    _check_nodes(pipeline, cluster, conns, got)
    intervals = pipeline.sql("SELECT uniqExact(intervalStartTime) AS n FROM network_flows_0_exact")
    assert intervals[0]["n"] >= 2
    reused = [k for k in want if (k.proto, k.local_pod, k.remote_pod) == ("udp", "web-0", "web-1")]
    assert len(reused) == 2  # the deleted and the new entry of one tuple add up on one key
    destroyed = [e for e in pipeline.watches["node-a"].snapshot() if e.orig[2] == udp.flow.sport]
    assert len(destroyed) == 1 and destroyed[0].orig_bytes > 0
    node_b = {cluster.nodes["node-b"].ipv4, cluster.nodes["node-b"].ipv6}
    # node-b's pod flows are all db-0's, all in its conntrack zone (its own sockets are in the default one)
    flows = [e for e in pipeline.kernel()["node-b"] if e.proto in ("tcp", "udp") and e.orig[1] not in node_b]
    assert {e.zone for e in flows} == {DB_CT_ZONE}, flows


def _check_nodes(pipeline: Pipeline, cluster: Cluster, conns: dict[str, Any], pods: Totals) -> None:
    """The node table holds exactly the nodes' own flows, with the kernel's counters, attributed to the
    node (no pod owns a lab node's socket); the pod rows and the README query do not see them."""
    want = pipeline.expected_nodes()
    pipeline.wait_settled()  # node rows travel in ENRICHED messages of their own: every one written
    got = pipeline.stored_nodes()
    diff = differences(want, got)
    assert not diff, "stored node rows differ from the kernel's counters:\n" + "\n".join(diff)
    a, b = cluster.nodes["node-a"], cluster.nodes["node-b"]
    names = list(conns)
    sent: dict[tuple[str, str], int] = {}  # (observer, remote) -> out bytes
    for k, (nbytes, _) in want.items():
        if k.direction == "out":
            sent[(k.observer, k.remote_pod or k.remote_node or k.remote_ip)] = nbytes
    for name, observer, remote in (
        ("node-a>node-b tcp4 (node's own)", "node-a", "node-b"),
        ("node-a>internet udp4 (node's own)", "node-a", INTERNET[0]),
        ("node-a>db-0 tcp4 (node flow)", "node-a", "db-0"),
    ):
        i = names.index(name)
        payload = sum(_payload(i, r)[0] for r in (1, 2))
        assert sent[(observer, remote)] >= payload, (name, sent)  # the payload plus headers
    # the responder's node meters the same flow as its own; a pod's peer node does not
    assert sent[("node-b", "node-a")] >= sum(
        _payload(names.index("node-a>node-b tcp4 (node's own)"), r)[1] for r in (1, 2)
    )
    assert {(k.observer, k.local_ip) for k in want} == {("node-a", a.ipv4), ("node-b", b.ipv4)}
    labels = {(k.observer, k.remote_node, k.remote_pod, k.cls, k.cross_zone) for k in want}
    assert labels == {
        ("node-a", "node-b", "", "INTRA_VPC", True),
        ("node-a", "", "", "PUBLIC_INTERNET", False),
        ("node-a", "node-b", "db-0", "INTRA_VPC", True),
        ("node-b", "node-a", "", "INTRA_VPC", True),
    }
    # the README query over the pod rows: exactly the pod totals, no node and no empty local pod
    readme = pipeline.sql(README_QUERY.replace("formatReadableSize(sum(bytes))", "sum(bytes) AS total"))
    got_readme = {(r["localPod"], r["remotePod"], r["connectionClass"]): int(r["total"]) for r in readme}
    want_readme: Counter[tuple[str, str, str]] = Counter()
    for k, (nbytes, _) in pods.items():
        if k.direction == "out":
            want_readme[(k.local_pod, k.remote_pod, k.cls)] += nbytes
    assert got_readme == dict(want_readme)
    assert len(pipeline.sql(README_QUERY)) == len(want_readme)  # and the README's text runs as it is


README_QUERY = (
    (Path(__file__).resolve().parents[2] / "README.md")
    .read_text()
    .split("Go kubenetmon's README query runs unchanged", 1)[1]
    .split("```sql\n", 1)[1]
    .split("```", 1)[0]
)
"""The README's query, as the README prints it."""
