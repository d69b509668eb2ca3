"""Short-lived flows under churn: thousands of TCP and UDP flows per second, each opened, used and destroyed
between two polls, their tuples soon reused (and with them, the kernel's conntrack objects and ids). The
truth is nftables counters in the metered namespace, independent of conntrack: the published bytes and
packets per protocol, family and direction must equal them exactly."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from kubenetmon.cli.lab import churn
from kubenetmon.cli.natsserver import NatsServer
from tests.fixtures.lab import Lab, Node
from tests.fixtures.nats import nats_settings_for
from tests.support.agent import AgentProcess, read_raw
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns
Start = Callable[..., AgentProcess]
PORT = 7000
MIN_RATE = 2500
FLOW_TABLE = "kubenetmon_agent_flow_table_total{"
TIMEOUTS = (
    "nf_conntrack_tcp_timeout_time_wait",
    "nf_conntrack_tcp_timeout_close",
    "nf_conntrack_udp_timeout",
    "nf_conntrack_udp_timeout_stream",
)


def churn_process(host: Node, role: str, *args: str) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", host.netns, sys.executable, "-m", "kubenetmon.cli.lab.churn", role]
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def churn_server(lab: Lab) -> Iterator[tuple[Node, Node]]:
    """Nodes n1 (the client, metered) and n2 (the server), 1 s conntrack timeouts and truth counters in n1."""
    n1, n2 = lab.node("n1"), lab.node("n2")
    for name in TIMEOUTS:
        n1.sysctl(f"net/netfilter/{name}", 1)
    n1.nft(churn.truth_ruleset(port=PORT))
    server = churn_process(n2, "serve", "--ipv4", n2.ipv4, "--ipv6", n2.ipv6, "--port", str(PORT))
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield n1, n2
    finally:
        server.kill()
        server.wait()


def drive(client: Node, server: Node, *, seconds: float) -> Counter[str]:
    """Churn for ``seconds``: what was done, by protocol and family (failures under their own names)."""
    args = ["--ipv4", server.ipv4, "--ipv6", server.ipv6, "--port", str(PORT), "--seconds", str(seconds)]
    proc = churn_process(client, "run", *args, "--udp-ports", "30000:8000")
    out, _ = proc.communicate(timeout=seconds + 60)
    assert proc.returncode == 0
    return Counter(json.loads(out))


def kernel_stats(node: Node) -> dict[str, int]:
    """The kernel's conntrack statistics (``conntrack -S``) summed over CPUs, the non-zero ones."""
    sums: Counter[str] = Counter()
    for line in node.run("conntrack", "-S").splitlines():
        for field in line.split()[1:]:
            name, _, value = field.partition("=")
            if value.isdigit():
                sums[name] += int(value)
    return {k: v for k, v in sums.items() if v}


def published(nats_messages: list) -> dict[str, tuple[int, int]]:  # type: ignore[type-arg]
    """The published rows to or from PORT, summed like the truth counters."""
    acc: dict[str, list[int]] = {}
    for msg in nats_messages:
        for r in msg.rows:
            if r.orig_dport != PORT:
                continue
            name = f"{ {6: 'tcp', 17: 'udp'}[r.proto] }{ipaddress.ip_address(r.orig_src).version}"
            out, back = acc.setdefault(f"{name}_out", [0, 0]), acc.setdefault(f"{name}_in", [0, 0])
            out[0] += r.orig_packets
            out[1] += r.orig_bytes
            back[0] += r.reply_packets
            back[1] += r.reply_bytes
    return {k: (v[0], v[1]) for k, v in acc.items()}


@pytest.mark.parametrize("seconds", [15.0, pytest.param(120.0, marks=pytest.mark.slow)])
def test_short_flows_under_churn_are_exact(
    churn_server: tuple[Node, Node], nats_server: NatsServer, start_agent: Start, seconds: float
) -> None:
    # polls 1 s apart: a reused conntrack's DESTROY arrives while the old one's is still remembered
    client, server = churn_server
    nats = nats_settings_for(nats_server)
    agent = start_agent(client, nats, poll=1.0)
    agent.polled_after(time.time())
    done = drive(client, server, seconds=seconds)
    flows = sum(n for name, n in done.items() if "failed" not in name)
    assert flows >= MIN_RATE * seconds, f"the generator reached {flows / seconds:.0f} flows/s: {done}"
    assert all(done[f"{p}{f}"] for p in ("tcp", "udp") for f in (4, 6)), done
    wait_until(
        lambda: not [e for e in client.conntrack_table() if PORT in (e.orig[2], e.orig[3])],
        timeout=30,
        what="every churn conntrack to expire",
        step=0.5,
    )
    truth = churn.read_truth(client.run("nft", "-j", "list", "table", "inet", churn.TABLE))
    assert set(truth) == set(churn.TRUTH_KEYS) and all(truth.values())
    state: dict[str, object] = {}

    def exact() -> bool:
        state["got"] = got = published(read_raw(nats))
        return got == truth

    try:
        wait_until(exact, timeout=30, what="published totals to equal the nftables counters", step=0.5)
    except TimeoutError:
        got = state.get("got", {})
        assert isinstance(got, dict)
        diff = {k: (got.get(k, (0, 0))[0] - v[0], got.get(k, (0, 0))[1] - v[1]) for k, v in truth.items()}
        table = {k: v for k, v in agent.metrics().items() if "flow_table_total" in k or "events_" in k}
        raise AssertionError(
            f"published - truth (packets, bytes): {diff}; agent: {table}; kernel: {kernel_stats(client)}"
        ) from None
    table = {k.split('"')[1]: v for k, v in agent.metrics().items() if k.startswith(FLOW_TABLE)}
    # with creation times in the keys no new flow is ever taken for a stale or repeated old one
    assert table.get("duplicate_events", 0) == table.get("stale_sightings", 0) == 0, table
    print(f"churn: {flows} flows in {seconds:.0f}s ({flows / seconds:.0f}/s): {dict(done)}; table: {table}")
