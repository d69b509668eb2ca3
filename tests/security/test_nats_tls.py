"""Every role's real process over mutual TLS, each with its own user and only its own permissions.

The server runs the shipped ``nats.conf`` (per-role users and subjects) with TLS and required client
certificates. The admin initialises the topology (``kubenetmon nats init``); then the agent (reading
a lab node's conntrack table), the enricher and the writer run as in production, each as its own NATS
user, the password once as a flag and once from the environment. Bytes the kernel counted for a flow
arrive in ClickHouse exactly, and nothing any process printed contains a password.

A client that does not trust the server's CA is refused, and says why in one log line.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.cli.natsserver import free_port
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import TransientError
from tests.fixtures.lab import Lab
from tests.support.builders import node, pod
from tests.support.secure import (
    DEADLINE_S,
    KUBENETMON,
    PASSWORDS,
    Proc,
    SecureNats,
    role_settings,
    tls_flags,
)
from tests.support.waiting import wait_until

Spawn = Callable[..., Proc]


def sql(dsn: str, query: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [*KUBENETMON, "sql", "--clickhouse-dsn", dsn, "--format", "json", query],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def is_ready(proc: Proc) -> bool:
    return proc.get("/readyz")[0] == 200


@pytest.mark.netns
def test_every_role_runs_over_mutual_tls_as_its_own_user(
    secure_nats: SecureNats, certs: Path, lab: Lab, spawn: Spawn, tmp_path: Path
) -> None:
    tls = tls_flags(secure_nats, certs)
    init = spawn(
        "nats",
        "init",
        *tls,
        "--nats-user",
        "kubenetmon-admin",
        env={"KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-admin"]},
    )
    assert init.wait() == 0, init.output

    n1 = lab.node("n1")
    a, b = lab.pod("a", node=n1), lab.pod("b", node=n1)
    inventory = tmp_path / "inventory.yaml"
    items = [node("n1", n1.ipv4), pod("a", a.ipv4, node="n1"), pod("b", b.ipv4, node="n1")]
    inventory.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    service = ["--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json"]
    writer = spawn(
        "writer",
        *tls,
        *service,
        "--nats-user",
        "kubenetmon-writer",
        "--clickhouse-dsn",
        dsn,
        "--batch-age",
        "200ms",
        env={"KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-writer"]},
    )
    enricher = spawn(
        "enricher",
        *tls,
        *service,
        "--nats-user",
        "kubenetmon-enricher",
        "--nats-password",
        PASSWORDS["kubenetmon-enricher"],
        "--inventory",
        str(inventory),
        "--fetch-timeout",
        "200ms",
        "--interval",
        "1",  # the agent's
    )
    agent = spawn(
        "agent",
        *tls,
        "--nats-user",
        "kubenetmon-agent",
        "--node-name",
        "n1",
        "--netns",
        n1.netns,
        "--interval",
        "1",
        "--poll-interval",
        "250ms",
        "--state-dir",
        str(tmp_path / "state"),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(free_port()),
        "--log-format",
        "json",
        env={"KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-agent"]},
    )
    for role in (writer, enricher):
        wait_until(partial(is_ready, role), timeout=DEADLINE_S, step=0.2, what=f"{role.name} ready")

    conn = a.tcp_connect(b.server("tcp"))
    conn.exchange(3000, 70_000)
    flow = conn.close()
    entry = n1.find(flow)
    want = entry.orig_bytes + entry.reply_bytes
    query = (
        f"SELECT sum(bytes) AS b FROM network_flows_0_exact WHERE observerNode = 'n1' "
        f"AND localPort = {flow.sport} AND remotePort = {flow.dport}"
    )
    wait_until(
        lambda: sql(dsn, query)[0]["b"] == want,
        timeout=DEADLINE_S,
        step=0.2,
        what=f"{want} bytes of {flow} in ClickHouse",
    )

    for proc in (agent, enricher, writer):
        proc.popen.send_signal(signal.SIGTERM)
    for proc in (agent, enricher, writer):
        assert proc.wait() == 0, proc.output[-3000:]
    everything = "".join(p.output for p in (init, writer, enricher, agent))
    assert not [pw for pw in PASSWORDS.values() if pw in everything]


async def test_a_server_signed_by_another_ca_is_refused(secure_nats: SecureNats, certs: Path) -> None:
    wrong = role_settings(secure_nats, certs, "kubenetmon-enricher", tls_ca=str(certs / "other-ca.pem"))
    with pytest.raises(TransientError, match="certificate verify failed"):
        await Broker.connect(wrong, name="wrong-ca", wait_s=2.0)
    right = role_settings(secure_nats, certs, "kubenetmon-enricher")
    async with await Broker.connect(right, name="right-ca", wait_s=5.0) as broker:
        assert broker.connected


def test_a_process_that_distrusts_the_server_says_why_and_never_gets_ready(
    secure_nats: SecureNats, certs: Path, spawn: Spawn, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    enricher = spawn(
        "enricher",
        *tls_flags(secure_nats, certs, ca="other-ca.pem"),
        "--nats-user",
        "kubenetmon-enricher",
        "--inventory",
        str(inventory),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--log-format",
        "json",
        env={"KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-enricher"]},
    )

    def refused() -> list[str]:
        return [str(r["msg"]) for r in enricher.records() if "certificate verify failed" in str(r.get("msg"))]

    def said_why() -> bool:
        return any(m.startswith("NATS unavailable (attempt 1): cannot connect to tls://") for m in refused())

    wait_until(said_why, timeout=DEADLINE_S, step=0.2, what="the refusal logged, naming the certificate")
    assert enricher.get("/readyz")[0] == 503
    enricher.popen.send_signal(signal.SIGTERM)
    assert enricher.wait() == 0
    assert PASSWORDS["kubenetmon-enricher"] not in enricher.output
