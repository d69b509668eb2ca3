"""Node identity on the wire: a real nats-server running the shipped Kubernetes configuration (nats.conf
with identity.conf: auth callout), the real ``kubenetmon auth`` process, and the Kubernetes API test
server reviewing ServiceAccount tokens.

- an agent's token gets a user for its pod's node: it publishes that node's reports, and the server
  refuses (permission violation) the same identity publishing another node's;
- anything but a valid token of the agent's ServiceAccount, bound to a live pod on a node, is refused,
  counted by reason and logged in one line;
- a report cannot be pre-empted: ids carry the agent's secret key, so another node publishing under
  the id it can predict does not turn the real report into a duplicate; and if an id is taken all the
  same (a collision forced by a test that knows the key), the agent says so and counts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kubenetmon.agent import reports
from kubenetmon.agent.publisher import Publisher
from kubenetmon.agent.reports import Coverage, Report
from kubenetmon.shared.broker import Broker, Delivery
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.schema import decode_raw, record_of
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.shared.topology import agent_inbox
from tests.fixtures.kube import KubeApi
from tests.support import http
from tests.support.commands import KUBENETMON, clean_env, kubenetmon
from tests.support.natsconf import ISSUER_SEED, PASSWORDS, SERVER_ENV, ConfiguredNats, write_conf
from tests.support.processes import Process, http_port
from tests.support.waiting import eventually

# meant to keep the module on one worker so its module-scoped servers start once (docs/testing.md: open)
pytestmark = pytest.mark.xdist_group("node-identity")

DENIED_WAIT_S = 1.0
BOOT = "6f0c3a5e-1d2b-4c7a-9e8f-0a1b2c3d4e5f"
AGENT_SA = "kubenetmon:kubenetmon-agent"


@dataclass
class Cluster:
    nats: ConfiguredNats
    kube: KubeApi
    auth: Process
    metrics_port: int
    tokens: Path

    def pod(self, name: str, node: str | None, *, uid: str = "") -> dict[str, object]:
        spec = {"nodeName": node} if node else {}
        pod = {
            "metadata": {"namespace": "kubenetmon", "name": name, "uid": uid or f"uid-{name}"},
            "spec": spec,
        }
        return self.kube.add("pods", pod)

    def token_file(self, token: str) -> str:
        path = self.tokens / f"token-{len(list(self.tokens.iterdir()))}"
        path.write_text(token + "\n")
        return str(path)

    def settings(self, token_file: str, **overrides: object) -> NatsSettings:
        return replace(
            NatsSettings(),
            urls=(self.nats.url,),
            token_file=token_file,
            publish_timeout_s=DENIED_WAIT_S,
            connect_timeout_s=3.0,
            **overrides,  # type: ignore[arg-type]
        )

    def identity(self, pod_name: str, node: str) -> NatsSettings:
        """Settings of an agent pod ``pod_name`` on ``node``: its token file."""
        token = self.kube.issue_token(self.pod(pod_name, node))
        return self.settings(self.token_file(token))

    def metric(self, result: str) -> float:
        _, text = http.get(self.metrics_port, "/metrics")
        return http.samples(text).get(f'kubenetmon_auth_requests_total{{result="{result}"}}', 0.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("node-identity")
    kube = KubeApi()
    kube.thread.start()
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(json.dumps(_kubeconfig(kube.url)))
    seed = root / "issuer-seed"
    seed.write_text(ISSUER_SEED + "\n")
    tokens = root / "tokens"
    tokens.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SERVER_ENV.items():
            mp.setenv(key, value)
        nats = ConfiguredNats(root, write_conf(root, callout=True))
        nats.start()
    auth = None
    try:
        _init(nats)
        auth = _start_auth(nats, kubeconfig=kubeconfig, seed=seed, log=root / "auth.log")
        port = _ready_port(auth)
        yield Cluster(nats, kube, auth, port, tokens)
    finally:
        if auth is not None:
            auth.kill()
        nats.stop()
        kube.close_watches()
        kube.server.shutdown()
        kube.server.server_close()


def _kubeconfig(url: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "users": [{"name": "auth", "user": {"token": "auth-service-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "auth"}}],
        "current-context": "test",
    }


def _admin_env(nats: ConfiguredNats) -> dict[str, str]:
    return {
        "KUBENETMON_NATS_URL": nats.url,
        "KUBENETMON_NATS_USER": "kubenetmon-admin",
        "KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-admin"],
    }


def _init(nats: ConfiguredNats) -> None:
    out = kubenetmon("nats", "init", "--connect-wait", "10s", env=_admin_env(nats), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _start_auth(nats: ConfiguredNats, *, kubeconfig: Path, seed: Path, log: Path) -> Process:
    env = clean_env(
        KUBENETMON_NATS_URL=nats.url,
        KUBENETMON_NATS_USER="kubenetmon-auth",
        KUBENETMON_NATS_PASSWORD=PASSWORDS["kubenetmon-auth"],
    )
    argv = [
        *KUBENETMON,
        "auth",
        f"--kubeconfig={kubeconfig}",
        f"--auth-issuer-seed-file={seed}",
        "--http-port=0",
        "--log-format=json",
    ]
    return Process(argv, log_path=log, env=env)


def _ready_port(auth: Process) -> int:
    async def ready() -> int:
        port = 0

        def up() -> bool:
            nonlocal port
            port = http_port(auth) or 0
            assert auth.proc.poll() is None, auth.log
            return bool(port) and http.get(port, "/readyz")[0] == 200

        await eventually(up)
        return port

    return asyncio.run(ready())


@pytest.fixture
async def admin(cluster: Cluster) -> AsyncIterator[Broker]:
    settings = replace(
        NatsSettings(),
        urls=(cluster.nats.url,),
        user="kubenetmon-admin",
        password=PASSWORDS["kubenetmon-admin"],
    )
    broker = await Broker.connect(settings, name="test-admin", wait_s=5.0)
    yield broker
    await broker.close()


def report(node: str, *, start: int, seq: int = 0, key: str = "") -> Report:
    coverage = Coverage(span_from_ms=start * 1000, span_to_ms=(start + 10) * 1000)
    return reports.build(
        [], node=node, boot=BOOT, start=start, seconds=10, seq=seq, max_bytes=4096, coverage=coverage, key=key
    )


async def raw_messages(admin: Broker) -> list[Delivery]:
    source = await admin.ephemeral("raw")
    try:
        total = (await admin.stream_info("raw")).messages
        got: list[Delivery] = []
        while len(got) < total:
            got += await source.fetch(100, 2.0)
        return got
    finally:
        await source.close()


def taken() -> float:
    return REGISTRY.get_sample_value("kubenetmon_agent_report_id_taken_total") or 0.0


# -- a node publishes its own reports, and only those ------------------------------------------------


async def test_an_agent_publishes_its_own_nodes_reports_and_no_other(
    cluster: Cluster, admin: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    pod = cluster.pod("agent-own", "node-own")
    token = cluster.token_file(cluster.kube.issue_token(pod))
    own = Publisher(cluster.settings(token), node="node-own", window=4)
    try:
        sent = await own.send(report("node-own", start=1_800_000_000), fresh=True)
    finally:
        await own.close()
    assert (sent.messages, sent.duplicates, sent.taken) == (1, 0, 0)
    granted = [r for r in cluster.auth.records() if r.get("msg") == "agent authorized"]
    assert any(r.get("node") == "node-own" for r in granted)

    # the same identity claiming another node: the server refuses the publish itself
    caplog.set_level(logging.WARNING, logger="kubenetmon.shared.broker.connection")
    settings = cluster.settings(token)
    inbox = agent_inbox("node-own")
    async with await Broker.connect(settings, name="forger", wait_s=5.0, inbox=inbox) as forger:
        with pytest.raises(TransientError):
            await forger.publish(forger.raw_subject("node-other"), b"forged", msg_id="forged/1")
        with pytest.raises(TransientError):  # nor any other subject, JetStream's API included
            await forger.publish(forger.enriched_subject("node-own"), b"forged", msg_id="forged/2")
    violations = [r.getMessage() for r in caplog.records if "permissions violation" in r.getMessage()]
    assert any('publish to "kubenetmon.raw.node-other"' in v for v in violations), violations

    subjects = {d.subject for d in await raw_messages(admin)}
    assert "kubenetmon.raw.node-own" in subjects
    assert "kubenetmon.raw.node-other" not in subjects


async def test_an_agent_cannot_read_raw_or_other_inboxes(cluster: Cluster) -> None:
    """No subscription but its own inbox: it cannot learn another agent's message ids or acks."""
    pod = cluster.pod("agent-reader", "node-reader")
    token = cluster.token_file(cluster.kube.issue_token(pod))
    settings = cluster.settings(token)
    inbox = agent_inbox("node-reader")
    async with await Broker.connect(settings, name="reader", wait_s=5.0, inbox=inbox) as reader:
        with pytest.raises(TransientError):  # a stream read is a JetStream API request: refused
            await reader.stream_info("raw")
        with pytest.raises(TransientError):
            await reader.ephemeral("raw")


# -- what is refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "invalid_token",
        "wrong_audience",
        "wrong_service_account",
        "pod_not_found",
        "pod_uid_mismatch",
        "no_node",
        "no_token",
    ],
)
async def test_anything_but_a_live_agent_pods_token_is_refused(cluster: Cluster, case: str) -> None:
    kube, name = cluster.kube, f"agent-{case.replace('_', '-')}"
    pod = cluster.pod(name, None if case == "no_node" else "node-x")
    token = {
        "invalid_token": "not-a-token",
        "wrong_audience": kube.issue_token(pod, audiences=("https://kubernetes.default.svc",)),
        "wrong_service_account": kube.issue_token(pod, service_account="kubenetmon:kubenetmon-writer"),
    }.get(case) or kube.issue_token(pod)
    if case == "pod_not_found":
        kube.delete("pods", pod)
    if case == "pod_uid_mismatch":  # the pod was replaced by another of the same name
        cluster.pod(name, "node-x", uid="uid-replacement")
    before = cluster.metric(case)
    settings = cluster.settings(cluster.token_file(token))
    if case == "no_token":  # the shared agent user's password: not accepted where the callout runs
        shared = PASSWORDS["kubenetmon-agent"]
        settings = replace(settings, token_file="", user="kubenetmon-agent", password=shared)
    with pytest.raises(TransientError):  # the server says 'Authorization Violation' and hangs up
        await Broker.connect(settings, name=f"refused-{case}", wait_s=2.0)
    await eventually(lambda: cluster.metric(case) > before)
    lines = [r for r in cluster.auth.records() if r.get("reason") == case]
    assert lines and lines[-1]["msg"].startswith(f"agent refused: {case}: ")
    assert token not in cluster.auth.log  # a token is a credential: never logged


async def test_absurd_tokens_are_refused_and_the_service_lives_on(cluster: Cluster) -> None:
    absurd = ["x" * (1 << 20), "a.b.c" * 800, '{"exp": 1}\u0000', "e30." * 50, "\u00e9\u4e2d" * 100]
    for token in absurd:
        with pytest.raises(TransientError):
            await Broker.connect(cluster.settings(cluster.token_file(token)), name="absurd", wait_s=2.0)
    assert cluster.auth.proc.poll() is None
    async with await Broker.connect(cluster.identity("agent-after", "node-after"), name="after", wait_s=5.0):
        pass


async def test_a_node_claim_in_the_token_must_match_the_pod(cluster: Cluster) -> None:
    """Kubernetes >= 1.30 binds the node into the token too: both must agree."""
    pod = cluster.pod("agent-claim", "node-claim")
    token = cluster.kube.issue_token(pod, node_claim=True)
    settings = cluster.settings(cluster.token_file(token))
    async with await Broker.connect(settings, name="claim", wait_s=5.0):
        pass
    cluster.kube.modify("pods", dict(pod, spec={"nodeName": "node-elsewhere"}))
    before = cluster.metric("node_mismatch")
    with pytest.raises(TransientError):
        await Broker.connect(settings, name="claim-moved", wait_s=2.0)
    await eventually(lambda: cluster.metric("node_mismatch") > before)


# -- pre-emption -------------------------------------------------------------------------------------


async def test_a_report_cannot_be_pre_empted_by_a_predicted_id(cluster: Cluster, admin: Broker) -> None:
    victim = Publisher(cluster.identity("agent-victim", "node-victim"), node="node-victim", window=4)
    attacker = cluster.identity("agent-att", "node-att")
    real = report("node-victim", start=1_800_000_100, seq=7, key=reports.new_key())
    # everything the attacker can know of the victim's next id: node, boot (public in the Node's
    # status), interval start, seq and chunk; the key it cannot know
    predicted = real.msg_id(0).rpartition("/")[0]
    assert predicted == record_of(real.msg_id(0))
    inbox = agent_inbox("node-att")
    async with await Broker.connect(attacker, name="attacker", wait_s=5.0, inbox=inbox) as forger:
        forged = report("node-att", start=1_800_000_100, seq=7).chunks[0]
        result = await forger.publish(forger.raw_subject("node-att"), forged, msg_id=predicted)
        assert not result.duplicate
    before = taken()
    try:
        sent = await victim.send(real, fresh=True)
    finally:
        await victim.close()
    assert (sent.duplicates, sent.taken) == (0, 0)
    assert taken() == before
    stored = {d.msg_id: d for d in await raw_messages(admin)}
    assert stored[real.msg_id(0)].subject == "kubenetmon.raw.node-victim"
    assert decode_raw(stored[real.msg_id(0)].data).node == "node-victim"


async def test_a_taken_id_is_reported(
    cluster: Cluster, admin: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A collision forced by a test that knows the key: the agent logs it, counts it, and says so."""
    victim = Publisher(cluster.identity("agent-v2", "node-v2"), node="node-v2", window=4)
    attacker = cluster.identity("agent-a2", "node-a2")
    real = report("node-v2", start=1_800_000_200, seq=3, key=reports.new_key())
    inbox = agent_inbox("node-a2")
    async with await Broker.connect(attacker, name="attacker-2", wait_s=5.0, inbox=inbox) as forger:
        forged = report("node-a2", start=1_800_000_200, seq=3).chunks[0]
        await forger.publish(forger.raw_subject("node-a2"), forged, msg_id=real.msg_id(0))
    caplog.set_level(logging.ERROR, logger="kubenetmon.agent.publisher")
    before = taken()
    try:
        sent = await victim.send(real, fresh=True)
        again = await victim.send(real, fresh=False)  # a retry: duplicates are expected, not "taken"
    finally:
        await victim.close()
    assert (sent.duplicates, sent.taken) == (1, 1)
    assert (again.duplicates, again.taken) == (1, 0)
    assert taken() == before + 1
    (line,) = [r for r in caplog.records if r.getMessage().startswith("report id already taken")]
    assert line.ids == [record_of(real.msg_id(0))]  # type: ignore[attr-defined]
    assert real.key not in line.getMessage() + json.dumps(line.ids)  # type: ignore[attr-defined]


async def test_an_agent_cannot_roll_up_or_purge_raw_through_headers(cluster: Cluster, admin: Broker) -> None:
    """Its grant lets it publish on its own subject only, and RAW takes no rollup header: a message
    asking to purge the stream (``Nats-Rollup: all``) or its own subject is refused, RAW untouched."""
    settings = cluster.identity("agent-rollup", "node-rollup")
    own = Publisher(settings, node="node-rollup", window=4)
    try:
        await own.send(report("node-rollup", start=1_800_000_300, key=reports.new_key()), fresh=True)
    finally:
        await own.close()
    before = (await admin.stream_info("raw")).messages
    inbox = agent_inbox("node-rollup")
    async with await Broker.connect(settings, name="roller", wait_s=5.0, inbox=inbox) as roller:
        subject = roller.raw_subject("node-rollup")
        for rollup in ("all", "sub"):
            with pytest.raises(TransientError, match=r"(?i)rollup"):
                await roller.publish(subject, b"x", msg_id="", headers={"Nats-Rollup": rollup})
    assert (await admin.stream_info("raw")).messages == before


async def test_a_user_ends_with_its_token_and_the_agent_returns_with_the_next(cluster: Cluster) -> None:
    """The user lives no longer than the token it was issued for (its ``exp``): the server then ends the
    connection, and the agent connects again with the token the kubelet has rotated in meanwhile."""
    pod = cluster.pod("agent-expiring", "node-expiring")
    soon = int(time.time()) + 8  # the token's lifetime, not a wait: the test waits on the disconnect
    path = Path(cluster.token_file(cluster.kube.issue_token(pod, expires_at=soon)))
    agent = Publisher(cluster.settings(str(path)), node="node-expiring", window=4)

    def grants() -> list[dict[str, object]]:
        return [
            r
            for r in cluster.auth.records()
            if r.get("msg") == "agent authorized" and r.get("node") == "node-expiring"
        ]

    try:
        first = report("node-expiring", start=1_800_000_500, key=reports.new_key())
        assert (await agent.send(first, fresh=True)).messages == 1
        later = cluster.kube.issue_token(pod, expires_at=soon + 3600)
        await asyncio.to_thread(path.write_text, later)
        await eventually(lambda: not agent.connected or len(grants()) > 1)
        second = report("node-expiring", start=1_800_000_510, seq=1, key=reports.new_key())
        assert (await agent.send(second, fresh=True)).messages == 1
    finally:
        await agent.close()
    assert [g["expires"] for g in grants()] == [soon, soon + 3600]


# -- last: restarts the module's server ---------------------------------------------------------------


async def test_a_rotated_token_is_read_again_when_the_agent_reconnects(
    cluster: Cluster, admin: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet rewrites a projected token in place; the old one stops working. An agent connected
    with the old token reconnects (here: its server restarts) with the new one."""
    pod = cluster.pod("agent-rotating", "node-rotating")
    old = cluster.kube.issue_token(pod)
    path = Path(cluster.token_file(old))
    agent = Publisher(cluster.settings(str(path)), node="node-rotating", window=4)
    try:
        first = report("node-rotating", start=1_800_000_400, key=reports.new_key())
        assert (await agent.send(first, fresh=True)).messages == 1
        await asyncio.to_thread(path.write_text, cluster.kube.issue_token(pod))
        del cluster.kube.service_tokens[old]  # expired
        for key, value in SERVER_ENV.items():
            monkeypatch.setenv(key, value)
        cluster.nats.restart()
        rotated = report("node-rotating", start=1_800_000_410, seq=1, key=reports.new_key())

        async def delivered() -> bool:
            try:
                return (await agent.send(rotated, fresh=False)).messages == 1
            except TransientError:
                return False

        # the agent may come back before the auth service: refused once, the client gives up on that
        # connection, and the agent connects anew (``Publisher.connect``), again with the file's token
        await eventually(delivered)
    finally:
        await agent.close()
    stored = {d.msg_id for d in await raw_messages(admin)}
    assert rotated.msg_id(0) in stored
