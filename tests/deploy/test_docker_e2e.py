"""The ``docker`` suite: the image and the compose stack, built and run for real, end to end.

On demand (``pytest -m docker``; deselected by default). It needs root and installs what is missing (Debian's
Docker engine and Compose v1, debootstrap), starts a private engine that leaves the host's netfilter alone
when none answers (tests/support/engine.py), and makes its base images without a registry: a debootstrapped
Debian with Python 3.11 (``PYTHON_IMAGE``) and NATS from the ``nats-server`` binary the project depends on.
Both are cached between runs. Then, with the commands of the README's compose section:

- the image builds with BuildKit (with the embedded engine, for the stack) and with the classic builder,
  and runs read-only with every capability dropped;
- ``compose.yaml`` plus ``docs/compose/chdb.yaml`` come up under Compose v1: nats, init-nats,
  node-sysctls, the agent in the host's network with NET_ADMIN, the enricher, init-clickhouse, the writer
  (chDB in a volume) and the traffic pair. The bytes stored equal the traffic generator's known count
  exactly, and the agent ran with conntrack creation timestamps on;
- each of nats, agent, enricher and writer is stopped with SIGTERM while a flow is open: each exits 0
  (an orderly drain) and, restarted, loses nothing;
- the agent container is killed (SIGKILL) right after a flow's first batch, a second batch goes while it
  is down, and it is started again: exact.

A flow that starts and ends while the agent is down is gone from conntrack before the agent returns (its
DESTROY event had no listener): no agent can count it, so the scenarios keep their flow open (``traffic.py
hold``) across every stop and end it with the agent running.

The node-sysctls service writes three conntrack sysctls of the host's network namespace, and conntrack is
turned on there (one counting nftables table, tests/support/engine.py); the suite puts back what it found
when it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.compose import TrafficPlan, traffic_plan
from tests.support.engine import Engine, base_image, conntrack_off, conntrack_on, ensure_engine, nats_image
from tests.support.waiting import wait_until

# Each test's limit covers, for the first, making the base images and building the image from nothing.
# one engine and one compose project: one worker runs them all, in order (run with -n 0)
pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600), pytest.mark.xdist_group("docker")]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "kubenetmon-e2e"  # not the README's "kubenetmon": its `down -v` never touches a stack of yours
COMPOSE_FILES = ("compose.yaml", "docs/compose/chdb.yaml")
IMAGE = "kubenetmon:dev"
SYSCTLS = ("nf_conntrack_acct", "nf_conntrack_events", "nf_conntrack_timestamp")
FLOWS_VIEW = "network_flows_0_exact"
TIMESTAMPS_GAUGE = "kubenetmon_agent_conntrack_timestamps_enabled"
AGENT_METRICS = "http://127.0.0.1:9810/metrics"  # the agent runs in the host's network namespace
STORED_DEADLINE_S = 240.0
HEALTHY_DEADLINE_S = 180.0


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    if os.geteuid() != 0:
        pytest.fail("the docker suite needs root (it installs and starts a Docker engine)")
    engine = ensure_engine()
    try:
        yield engine
    finally:
        engine.stop()


@dataclass
class Images:
    base: str
    nats: str
    build_s: float


@pytest.fixture(scope="module")
def images(engine: Engine) -> Images:
    base = base_image(engine)
    nats = nats_image(engine, base)
    started = time.monotonic()
    build(engine, base, tag=IMAGE, with_chdb=True, buildkit=True)
    return Images(base=base, nats=nats, build_s=time.monotonic() - started)


def build(engine: Engine, base: str, *, tag: str, with_chdb: bool, buildkit: bool) -> None:
    """The README's build command, plus what a machine with no registry needs: the local base image
    and the host's network (the package index)."""
    env = {**engine.env, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    out = subprocess.run(
        [
            engine.docker,
            "build",
            "--network",
            "host",
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--build-arg",
            f"WITH_CHDB={'true' if with_chdb else 'false'}",
            "-t",
            tag,
            ".",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-6000:]


class Stack:
    """``docker-compose -p PROJECT -f compose.yaml -f docs/compose/chdb.yaml ...`` on the engine."""

    def __init__(self, engine: Engine, images: Images) -> None:
        self.engine = engine
        self.env = {**engine.env, "KUBENETMON_NATS_IMAGE": images.nats, "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        files = [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        out = subprocess.run(
            [self.engine.compose, "-p", PROJECT, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} failed:\n{out.stdout[-3000:]}{out.stderr[-6000:]}"
            )
        return out

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        out = self.engine.run("inspect", self.container(service))
        state: dict[str, Any] = json.loads(out.stdout)[0]["State"]
        return state

    def healthy(self, service: str) -> bool:
        state = self.inspect(service)
        return bool(state["Running"]) and state.get("Health", {}).get("Status") == "healthy"

    def wait_healthy(self, *services: str) -> None:
        for service in services:
            wait_until(
                lambda s=service: self.healthy(s),  # type: ignore[misc]
                timeout=HEALTHY_DEADLINE_S,
                what=f"{service} healthy",
                step=0.5,
            )

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service).stdout

    def hold(self, *, port: int, datagrams: int, size: int, plan: TrafficPlan) -> Sender:
        """A traffic-source container holding one flow open from the pod address and ``port``, one batch
        sent already (``traffic.py hold``)."""
        out = self.compose(
            "run", "-d", "--no-deps", "traffic-source", "hold",
            f"--to={plan.sink_ip}:{plan.sink_port}", f"--source={plan.source_ip}:{port}",
            f"--datagrams={datagrams}", f"--size={size}",
        )  # fmt: skip
        sender = Sender(self.engine, out.stdout.split()[-1], datagrams=datagrams, size=size)
        sender.wait_batches(1)
        return sender

    def sql(self, query: str) -> list[dict[str, Any]]:
        """A read-only query, asked of the writer that owns the chDB directory (as the README shows)."""
        out = self.compose(
            "exec", "-T", "writer", "kubenetmon", "sql", "--format", "json", query, check=False
        )
        if out.returncode != 0:
            return []  # the writer is restarting: no answer yet
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows

    def stored(self, plan: TrafficPlan) -> dict[int, dict[str, int]]:
        """Per source port of the traffic source: out bytes/packets, in bytes, rows and row identities."""
        rows = self.sql(
            f"""SELECT localPort AS port,
                       sumIf(bytes, direction = 'out') AS out_bytes,
                       sumIf(packets, direction = 'out') AS out_packets,
                       sumIf(bytes, direction = 'in') AS in_bytes,
                       count() AS rows,
                       uniqExact(intervalStartTime, observerNode, flowId, direction) AS identities
                FROM {FLOWS_VIEW}
                WHERE proto = 'UDP' AND localPod = 'traffic-source' AND remotePort = {plan.sink_port}
                GROUP BY localPort"""
        )
        return {int(r["port"]): {k: int(v) for k, v in r.items() if k != "port"} for r in rows}


class Sender:
    """One open flow of the traffic source: ``more()`` sends a batch (SIGUSR1), ``close()`` ends it
    (SIGTERM: the container exits and the engine drops its conntrack entries, a DESTROY event)."""

    def __init__(self, engine: Engine, container: str, *, datagrams: int, size: int) -> None:
        self.engine, self.container, self.datagrams, self.size = engine, container, datagrams, size
        self.batches = 1

    def wait_batches(self, n: int) -> None:
        def sent() -> bool:
            return f"batch {n} sent" in self.engine.run("logs", self.container).stdout

        wait_until(sent, timeout=60, what=f"batch {n} sent", step=0.2)

    def more(self) -> None:
        self.engine.run("kill", "--signal", "USR1", self.container)
        self.batches += 1
        self.wait_batches(self.batches)

    def close(self) -> dict[str, int]:
        """End the flow; what it sent."""
        self.engine.run("stop", "-t", "30", self.container)
        state = json.loads(self.engine.run("inspect", self.container).stdout)[0]["State"]
        assert state["ExitCode"] == 0, state
        self.engine.run("rm", self.container)
        packets = self.batches * self.datagrams
        return {"out_bytes": packets * (self.size + 28), "out_packets": packets}


@pytest.fixture(scope="module")
def host_sysctls() -> Iterator[dict[str, str]]:
    """The host namespace's conntrack sysctls as found, put back when the suite ends; and conntrack on
    in that namespace meanwhile (tests/support/engine.py: this engine adds no iptables rules)."""
    found = {name: Path(f"/proc/sys/net/netfilter/{name}").read_text().strip() for name in SYSCTLS}
    conntrack_on()
    try:
        yield found
    finally:
        conntrack_off()
        for name, value in found.items():
            Path(f"/proc/sys/net/netfilter/{name}").write_text(value)


@pytest.fixture(scope="module")
def stack(engine: Engine, images: Images, host_sysctls: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(engine, images)
    stack.compose("down", "-v", "--remove-orphans", check=False)  # a previous run's leftovers, if any
    try:
        stack.compose("up", "-d", timeout=900)  # the image is built: compose builds nothing
        stack.wait_healthy("nats", "agent", "enricher", "writer")
        yield stack
    finally:
        for service in ("node-sysctls", "agent", "enricher", "writer", "nats"):
            tail = stack.compose("logs", "--no-color", "--tail=60", service, check=False).stdout
            print(f"--- {service}\n{tail}")
        stack.compose("down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def expected() -> dict[int, dict[str, int]]:
    """What each source port of the traffic source has sent so far (the tests add to it, in order)."""
    plan = traffic_plan()
    return {plan.source_port: {"out_bytes": plan.bytes, "out_packets": plan.datagrams}}


def wait_stored(
    stack: Stack, plan: TrafficPlan, expected: dict[int, dict[str, int]]
) -> dict[int, dict[str, int]]:
    """Wait until every expected port has at least its bytes stored, then return what is stored."""
    seen: dict[int, dict[str, int]] = {}

    def arrived() -> bool:
        nonlocal seen
        seen = stack.stored(plan)
        return all(
            seen.get(port, {}).get("out_bytes", 0) >= want["out_bytes"] for port, want in expected.items()
        )

    try:
        wait_until(arrived, timeout=STORED_DEADLINE_S, what="the traffic stored", step=1.0)
    except TimeoutError as exc:
        raise AssertionError(f"stored {seen}, expected {expected}") from exc
    return seen


def assert_exact(stored: dict[int, dict[str, int]], expected: dict[int, dict[str, int]]) -> None:
    assert set(stored) == set(expected), (stored, expected)
    for port, want in expected.items():
        got = stored[port]
        assert (got["out_bytes"], got["out_packets"], got["in_bytes"]) == (
            want["out_bytes"],
            want["out_packets"],
            0,
        ), f"port {port}: stored {got}, sent {want}"
        assert got["rows"] == got["identities"], f"port {port}: a row identity appears twice: {got}"


def test_the_image_builds_with_the_classic_builder_and_runs_locked_down(
    engine: Engine, images: Images
) -> None:
    """BuildKit built the stack's image (with chDB); the classic builder builds the default one. Both run
    ``--help`` on a read-only root with every capability dropped, as an unprivileged user."""
    build(engine, images.base, tag="kubenetmon:classic", with_chdb=False, buildkit=False)
    for tag in (IMAGE, "kubenetmon:classic"):
        out = engine.run(
            "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", tag, "--help",
        )  # fmt: skip
        assert "Kubernetes network-flow metering" in out.stdout, tag
        user = engine.run("image", "inspect", "--format", "{{.Config.User}}", tag).stdout.strip()
        assert user == "10001:10001", tag
    chdb = "import importlib.util, sys; sys.exit(importlib.util.find_spec('chdb') is None)"
    assert (
        engine.run("run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", chdb).returncode
        == 0
    )
    without = engine.run(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python",
        "kubenetmon:classic",
        "-c",
        chdb,
        check=False,
    )
    assert without.returncode == 1, "WITH_CHDB=false leaves the embedded engine out"


def test_stack_stores_the_generated_bytes_exactly(stack: Stack, expected: dict[int, dict[str, int]]) -> None:
    plan = traffic_plan()
    source = stack.inspect("traffic-source")
    wait_until(
        lambda: not stack.inspect("traffic-source")["Running"], timeout=120, what="traffic sent", step=0.5
    )
    source = stack.inspect("traffic-source")
    assert source["ExitCode"] == 0, stack.logs("traffic-source")
    assert_exact(wait_stored(stack, plan, expected), expected)
    labels = stack.sql(
        f"""SELECT DISTINCT localNamespace, localPod, localNode, observerNode, connectionClass, environment
            FROM {FLOWS_VIEW}
            WHERE proto = 'UDP' AND localPod = 'traffic-source' AND remotePort = {plan.sink_port}"""
    )
    assert labels == [
        {
            "localNamespace": "traffic",
            "localPod": "traffic-source",
            "localNode": "compose-node",
            "observerNode": "compose-node",
            "connectionClass": "INTRA_VPC",
            "environment": "compose",
        }
    ]


def test_the_agent_runs_with_conntrack_timestamps(stack: Stack, host_sysctls: dict[str, str]) -> None:
    """node-sysctls turned the three on and exited 0; the agent ran with creation timestamps on: its
    gauge says 1, and its container reads the sysctl as 1."""
    sysctls = stack.inspect("node-sysctls")
    assert not sysctls["Running"] and sysctls["ExitCode"] == 0, stack.logs("node-sysctls")
    for name in SYSCTLS:
        assert f"net.netfilter.{name} = 1" in stack.logs("node-sysctls"), name
    seen = stack.compose("exec", "-T", "agent", "cat", "/proc/sys/net/netfilter/nf_conntrack_timestamp")
    assert seen.stdout.strip() == "1"
    assert "cannot turn on net.netfilter.nf_conntrack_timestamp" not in stack.logs("agent")
    with urllib.request.urlopen(AGENT_METRICS, timeout=10) as response:
        metrics = response.read().decode()
    gauge = [line for line in metrics.splitlines() if line.startswith(TIMESTAMPS_GAUGE)]
    assert [line.split()[-1] for line in gauge] == ["1.0"], gauge
    assert (
        stack.engine.run(
            "inspect", "--format", "{{.HostConfig.Privileged}}", stack.container("agent")
        ).stdout.strip()
        == "false"
    )


@pytest.mark.parametrize("service", ["agent", "enricher", "writer", "nats"])
def test_sigterm_drains_and_loses_nothing(
    stack: Stack, expected: dict[int, dict[str, int]], service: str
) -> None:
    """A flow in flight, then SIGTERM (``docker-compose stop``): the service exits 0 (an orderly drain),
    is started again, the flow goes on and ends, and every byte is stored exactly once."""
    plan = traffic_plan()
    port = {"agent": 40011, "enricher": 40012, "writer": 40013, "nats": 40014}[service]
    sender = stack.hold(port=port, datagrams=500, size=700, plan=plan)
    stack.compose("stop", "-t", "60", service, timeout=120)
    state = stack.inspect(service)
    assert not state["Running"] and state["ExitCode"] == 0, (state, stack.logs(service)[-4000:])
    sender.more()
    stack.compose("start", service)
    stack.wait_healthy(service)
    sender.more()
    expected[port] = sender.close()
    assert_exact(wait_stored(stack, plan, expected), expected)


def test_kill_of_the_agent_and_restart_is_exact(stack: Stack, expected: dict[int, dict[str, int]]) -> None:
    """SIGKILL of the agent container right after a flow's first batch, whatever it had read or
    published by then; a second batch while it is down; started again, it resumes from its checkpoint
    and the flow, ended, is stored exactly."""
    plan = traffic_plan()
    port = 40021
    sender = stack.hold(port=port, datagrams=400, size=900, plan=plan)
    stack.engine.run("kill", stack.container("agent"))
    state = stack.inspect("agent")
    assert not state["Running"] and state["ExitCode"] == 137, state
    sender.more()
    stack.compose("start", "agent")
    stack.wait_healthy("agent")
    sender.more()
    expected[port] = sender.close()
    assert_exact(wait_stored(stack, plan, expected), expected)
