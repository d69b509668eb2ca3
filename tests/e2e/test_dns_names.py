"""End to end with DNS names (``--dns-names``): a lab DNS server answers the pods' queries, the pods then
send known bytes to those addresses, and the stored rows carry the name and the kernel's exact bytes.
Besides: an answer that expired before the traffic gives no name, two names for one address give none
(counted as ambiguous by the agent), and every stored byte still equals the kernel's counters.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.e2e.cluster import INTERNET, S3, Cluster
from tests.e2e.expect import Key, differences
from tests.e2e.fixtures import MakePipeline
from tests.e2e.harness import Options, Pipeline
from tests.support.dnsserver import DnsServer, resolve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns

ZONE = {
    ("api.example.com", "A"): [(INTERNET[0], 3600)],
    ("old.example.com", "A"): [(S3[0], 1)],  # expires in a second; the grace is 0
    ("a.example.org", "AAAA"): [(INTERNET[1], 3600)],
    ("b.example.org", "AAAA"): [(INTERNET[1], 3600)],  # the same address under another name
}
NAMES_QUERY = """
SELECT observerNode, localPod, IPv6NumToString(remoteIP) AS rip, remotePort, toString(direction) AS direction,
       remoteDNSName, sum(bytes) AS bytes
FROM network_flows_0_exact
GROUP BY ALL
"""


def _metric(pipeline: Pipeline, node: str, name: str) -> float:
    return pipeline.metrics(f"agent:{node}").get(f"kubenetmon_agent_{name}", 0.0)


def _names(pipeline: Pipeline) -> dict[tuple[str, str, str, int, str], dict[str, int]]:
    """(observer, local pod, remote ip, remote port, direction) -> {name: bytes}."""
    out: dict[tuple[str, str, str, int, str], dict[str, int]] = defaultdict(dict)
    for r in pipeline.sql(NAMES_QUERY):
        rip = r["rip"].removeprefix("::ffff:")
        key = (r["observerNode"], r["localPod"], rip, int(r["remotePort"]), r["direction"])
        out[key][r["remoteDNSName"]] = int(r["bytes"])
    return out


def _kernel(want: dict[Key, tuple[int, int]], pod: str, ip: str, port: int) -> dict[str, int]:
    """The kernel's bytes per direction of the flows from ``pod`` to ``ip:port``."""
    got = {
        k.direction: b
        for k, (b, _) in want.items()
        if (k.local_pod, k.remote_ip, k.remote_port) == (pod, ip, port)
    }
    assert set(got) == {"out", "in"}, f"no flow {pod} -> {ip}:{port} in the kernel's table"
    return got


def test_stored_rows_carry_the_answered_name_and_the_exact_bytes(
    cluster: Cluster, make_pipeline: MakePipeline
) -> None:
    web0, web1, db0 = cluster.pods["web-0"], cluster.pods["web-1"], cluster.pods["db-0"]
    tcp4, udp6 = cluster.internet.server("tcp", family=4), cluster.internet.server("udp", family=6)
    s3tcp = cluster.s3.server("tcp", family=4)
    dns = DnsServer(cluster.internet, ZONE)
    pipeline = make_pipeline(Options(agent_args=("--dns-names", "--dns-grace", "0s")))

    # node-a: a name that holds, and one that expires before its traffic starts
    assert resolve(web1, dns.address, "api.example.com") == [INTERNET[0]]
    assert resolve(web0, dns.address, "old.example.com") == [S3[0]]
    wait_until(lambda: _metric(pipeline, "node-a", "dns_answers_total") >= 2, timeout=30, what="answers read")
    wait_until(lambda: _metric(pipeline, "node-a", "dns_entries") == 1, timeout=30, what="the expiry")
    # node-b: two names for one address
    assert resolve(db0, dns.address, "a.example.org", "AAAA") == [INTERNET[1]]
    assert resolve(db0, dns.address, "b.example.org", "AAAA") == [INTERNET[1]]
    wait_until(
        lambda: _metric(pipeline, "node-b", "dns_conflicts_total") >= 1, timeout=30, what="the conflict"
    )

    named, expired, ambiguous = web1.tcp_connect(tcp4), web0.tcp_connect(s3tcp), db0.udp_client(udp6)
    for conn, (up, down) in ((named, (12_345, 54_321)), (expired, (2_000, 3_000)), (ambiguous, (700, 900))):
        conn.exchange(up, down)
        conn.close()
    wait_until(
        lambda: _metric(pipeline, "node-b", "dns_ambiguous_addresses_total") >= 1,
        timeout=30,
        what="a report with the ambiguous address",
    )
    pipeline.wait_quiet()
    pipeline.stop_agents()
    want = pipeline.expected()
    got = pipeline.wait_until_stored(want)
    assert not differences(want, got), "\n".join(differences(want, got))

    names = _names(pipeline)
    for direction, nbytes in _kernel(want, "web-1", INTERNET[0], tcp4.port).items():
        assert names[("node-a", "web-1", INTERNET[0], tcp4.port, direction)] == {"api.example.com": nbytes}
    for direction, nbytes in _kernel(want, "web-0", S3[0], s3tcp.port).items():
        assert names[("node-a", "web-0", S3[0], s3tcp.port, direction)] == {"": nbytes}
    for direction, nbytes in _kernel(want, "db-0", INTERNET[1], udp6.port).items():
        assert names[("node-b", "db-0", INTERNET[1], udp6.port, direction)] == {"": nbytes}
    # no other name anywhere: only that address was answered on node-a (its DNS flows carry it too)
    assert {(key[2], name) for key, by_name in names.items() for name in by_name if name} == {
        (INTERNET[0], "api.example.com")
    }
