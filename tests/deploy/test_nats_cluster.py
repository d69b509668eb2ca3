"""The nats-cluster component, rendered by ``kubectl kustomize`` through the production-nats-cluster overlay:
a 3-replica StatefulSet started in parallel behind a headless Service, routes to every member, the single
server's users and permissions unchanged, streams R3 from the init Job; then the rendered configuration
run as three real nats-servers (names and routes moved to loopback), which form a JetStream cluster where
``kubenetmon nats init`` makes R3 streams and each role may do what it does and nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.agent import reports
from kubenetmon.agent.publisher import Publisher
from kubenetmon.agent.reports import Coverage
from kubenetmon.cli.natsserver import free_ports
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.deploy.render import (
    by_kind,
    configmap_data,
    container_env,
    containers,
    matches,
    name,
    named,
    pod_labels,
    pod_spec,
    render,
)
from tests.fixtures.kube import KubeApi
from tests.support.commands import KUBENETMON, clean_env, kubenetmon, made_the_whole_topology
from tests.support.natsconf import ISSUER_SEED, PASSWORDS, SERVER_ENV, ConfiguredNats, write_conf
from tests.support.processes import Process
from tests.support.waiting import eventually

# meant to keep the module on one worker so its module-scoped servers start once (docs/testing.md: open)
pytestmark = pytest.mark.xdist_group("nats-cluster-conf")

ROOT = Path(__file__).resolve().parents[2]
TARGET = "overlays/production-nats-cluster"
MEMBERS = 3
ROUTE = re.compile(r"nats://(nats-\d+)\.([a-z0-9-]+):6222")


def _objects() -> tuple[dict[str, Any], ...]:
    return render(TARGET)


def _statefulset() -> dict[str, Any]:
    return named(_objects(), "StatefulSet", "nats")


def _config() -> dict[str, str]:
    volumes = pod_spec(_statefulset())["volumes"]
    configmap = next(v["configMap"]["name"] for v in volumes if v["name"] == "config")
    return configmap_data(_objects(), configmap)


def test_three_members_start_together_one_per_node() -> None:
    sts = _statefulset()
    spec = sts["spec"]
    assert spec["replicas"] == MEMBERS
    assert spec["podManagementPolicy"] == "Parallel"  # each waits for a quorum before it is healthy
    spread = pod_spec(sts)["topologySpreadConstraints"]
    by_host = next(s for s in spread if s["topologyKey"] == "kubernetes.io/hostname")
    assert by_host["whenUnsatisfiable"] == "DoNotSchedule"
    assert matches(by_host["labelSelector"], pod_labels(sts))
    (nats,) = containers(sts)
    assert nats["args"] == ["-c", "/etc/nats/cluster.conf"]
    ports = {p["name"]: p["containerPort"] for p in nats["ports"]}
    assert ports == {"client": 4222, "cluster": 6222, "monitor": 8222}
    server_name = next(e for e in nats["env"] if e["name"] == "NATS_SERVER_NAME")
    assert server_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # nats-0, -1, -2: unique
    (claim,) = spec["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in nats["volumeMounts"]}[name(claim)] == "/data"


def test_pdb_keeps_a_quorum() -> None:
    labels = pod_labels(_statefulset())
    pdbs = [p for p in by_kind(_objects(), "PodDisruptionBudget") if matches(p["spec"]["selector"], labels)]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1


def test_routes_name_every_member_behind_the_headless_service() -> None:
    sts = _statefulset()
    service = named(_objects(), "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels(sts))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["cluster"] == 6222
    conf = _config()["cluster.conf"]
    routes = ROUTE.findall(conf)
    assert sorted(routes) == [(f"nats-{i}", name(service)) for i in range(MEMBERS)]
    assert re.search(r"^include \./nats\.conf$", conf, re.M)
    assert re.search(r"^\s+port: 6222$", conf, re.M)


def test_the_members_keep_the_single_servers_users_and_permissions() -> None:
    single = (ROOT / "k8s/components/nats-server/nats.conf").read_text()
    assert _config()["nats.conf"] == single
    identity = (ROOT / "k8s/components/nats-server/identity.conf").read_text()
    assert _config()["identity.conf"] == identity and "auth_callout" in identity
    users = re.findall(r"\{ user: (\S+),", single)
    assert sorted(users) == sorted(PASSWORDS)


def test_routes_are_open_between_members_only() -> None:
    labels = pod_labels(_statefulset())
    route_rules = []
    for policy in by_kind(_objects(), "NetworkPolicy"):
        spec = policy["spec"]
        if not matches(spec["podSelector"], labels):
            continue
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction, []):
                if any(p.get("port") == 6222 for p in rule.get("ports", [])):
                    route_rules.append((direction, rule[peers]))
    assert sorted(d for d, _ in route_rules) == ["egress", "ingress"]
    for _, peers in route_rules:
        assert all(set(p) == {"podSelector"} and matches(p["podSelector"], labels) for p in peers)


def test_the_init_job_makes_every_stream_r3() -> None:
    job = named(_objects(), "Job", "kubenetmon-init")
    init = next(c for c in containers(job) if c["args"][:2] == ["nats", "init"])
    assert container_env(_objects(), init)["KUBENETMON_NATS_REPLICAS"] == str(MEMBERS)


# -- the rendered configuration, run --------------------------------------------------------------------


def _member_conf(directory: Path, index: int, route_ports: list[int], *, callout: bool = False) -> Path:
    """The rendered files for member ``index``: store, name, route port and peers moved to loopback."""
    config = _config()
    directory.mkdir(parents=True)
    single = config["nats.conf"].replace("server_name: $NATS_SERVER_NAME", f"server_name: nats-{index}")
    # the shared agent user unless ``callout``: most tests here are about the cluster
    write_conf(directory, text=single, callout=callout)
    cluster = ROUTE.sub(lambda m: f"nats://127.0.0.1:{route_ports[int(m[1][5:])]}", config["cluster.conf"])
    cluster = re.sub(r"^(\s+)port: 6222$", rf"\g<1>port: {route_ports[index]}", cluster, flags=re.M)
    (directory / "cluster.conf").write_text(cluster)
    return directory / "cluster.conf"


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ConfiguredNats]]:
    root = tmp_path_factory.mktemp("nats-cluster-conf")
    route_ports = free_ports(MEMBERS)
    servers = [
        ConfiguredNats(root / f"nats-{i}", _member_conf(root / f"nats-{i}", i, route_ports))
        for i in range(MEMBERS)
    ]
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in SERVER_ENV.items():
                mp.setenv(key, value)
            for server in servers:
                server.launch()
        for server in servers:
            server.wait_healthy()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _settings(servers: list[ConfiguredNats], user: str) -> NatsSettings:
    return replace(
        NatsSettings(),
        urls=tuple(s.url for s in servers),
        user=user,
        password=PASSWORDS[user],
        publish_timeout_s=2.0,
        connect_timeout_s=2.0,
    )


def test_the_rendered_configuration_forms_a_cluster_with_per_role_users(
    members: list[ConfiguredNats],
) -> None:
    job = named(_objects(), "Job", "kubenetmon-init")
    init_env = container_env(
        _objects(), next(c for c in containers(job) if c["args"][:2] == ["nats", "init"])
    )
    env = {
        **os.environ,
        "KUBENETMON_NATS_URL": ",".join(s.url for s in members),
        "KUBENETMON_NATS_USER": "kubenetmon-admin",
        "KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-admin"],
        "KUBENETMON_NATS_REPLICAS": init_env["KUBENETMON_NATS_REPLICAS"],
    }
    init = kubenetmon("nats", "init", "--connect-wait", "10s", env=env, timeout=60)
    assert init.returncode == 0, init.stdout + init.stderr
    assert made_the_whole_topology(init), init.stdout + init.stderr
    asyncio.run(_roles_work_across_the_cluster(members))


async def _roles_work_across_the_cluster(members: list[ConfiguredNats]) -> None:
    async with await Broker.connect(
        _settings(members, "kubenetmon-admin"), name="t-admin", wait_s=5
    ) as admin:
        raw = await admin.stream_info("raw")
        assert raw.replicas == MEMBERS and raw.leader in {f"nats-{i}" for i in range(MEMBERS)}
        # every member may be the one a role reaches: the agent publishes through each in turn
        for i, member in enumerate(members):
            settings = replace(_settings(members, "kubenetmon-agent"), urls=(member.url,))
            async with await Broker.connect(settings, name=f"t-agent-{i}", wait_s=5) as agent:
                await agent.publish(agent.raw_subject("node-a"), b"raw", msg_id=f"cluster-conf/{i}")
                with pytest.raises(TransientError):
                    await agent.publish(agent.enriched_subject("node-a"), b"x", msg_id=f"denied/{i}")
        assert (await admin.stream_info("raw")).messages == MEMBERS
        assert (await admin.stream_info("enriched")).messages == 0
        enricher_settings = _settings(members, "kubenetmon-enricher")
        async with await Broker.connect(enricher_settings, name="t-enricher", wait_s=5) as enricher:
            source = await enricher.pull("enricher")
            got = []
            while len(got) < MEMBERS and (batch := await source.fetch(MEMBERS, 5.0)):
                got += batch
            assert sorted(d.msg_id for d in got) == [f"cluster-conf/{i}" for i in range(MEMBERS)]
            for delivery in got:
                await delivery.ack()
            await enricher.publish(enricher.enriched_subject("node-a"), b"rows", msg_id="cluster-conf/e")
        assert (await admin.stream_info("enriched")).messages == 1


def test_the_auth_callout_answers_agents_on_every_member(tmp_path: Path, kube_api: KubeApi) -> None:
    """The rendered Kubernetes identity on the cluster: one auth service, connected to one member,
    grants agents that connect to any member (requests and answers cross the routes)."""
    route_ports = free_ports(MEMBERS)
    servers = [
        ConfiguredNats(
            tmp_path / f"nats-{i}", _member_conf(tmp_path / f"nats-{i}", i, route_ports, callout=True)
        )
        for i in range(MEMBERS)
    ]
    auth: Process | None = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in SERVER_ENV.items():
                mp.setenv(key, value)
            for server in servers:
                server.launch()
        for server in servers:
            server.wait_healthy()
        admin = {**_env(servers, "kubenetmon-admin"), "KUBENETMON_NATS_REPLICAS": str(MEMBERS)}
        init = kubenetmon("nats", "init", "--connect-wait", "20s", env=admin, timeout=90)
        assert init.returncode == 0, init.stdout + init.stderr
        auth = _start_auth(servers[0], kube_api, tmp_path)
        asyncio.run(_agents_publish_through_every_member(servers, kube_api, tmp_path))
    finally:
        if auth is not None:
            auth.kill()
        for server in servers:
            server.stop()


def _env(servers: list[ConfiguredNats], user: str) -> dict[str, str]:
    return {
        "KUBENETMON_NATS_URL": ",".join(s.url for s in servers),
        "KUBENETMON_NATS_USER": user,
        "KUBENETMON_NATS_PASSWORD": PASSWORDS[user],
    }


def _start_auth(server: ConfiguredNats, kube: KubeApi, directory: Path) -> Process:
    kubeconfig, seed = directory / "kubeconfig", directory / "issuer-seed"
    kubeconfig.write_text(json.dumps(_kubeconfig(kube.url)))
    seed.write_text(ISSUER_SEED)
    argv = [*KUBENETMON, "auth", f"--kubeconfig={kubeconfig}", f"--auth-issuer-seed-file={seed}"]
    env = clean_env(**_env([server], "kubenetmon-auth"))
    return Process([*argv, "--http-port=0", "--log-format=json"], log_path=directory / "auth.log", env=env)


def _kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "users": [{"name": "auth", "user": {"token": "auth-service-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "auth"}}],
        "current-context": "test",
    }


async def _agents_publish_through_every_member(
    servers: list[ConfiguredNats], kube: KubeApi, directory: Path
) -> None:
    for i, server in enumerate(servers):
        pod = kube.add("pods", {"metadata": {"namespace": "kubenetmon", "name": f"agent-{i}", "uid": f"u{i}"},
                                "spec": {"nodeName": f"node-{i}"}})  # fmt: skip
        token = directory / f"token-{i}"
        token.write_text(kube.issue_token(pod))
        settings = replace(NatsSettings(), urls=(server.url,), token_file=str(token), publish_timeout_s=2.0)
        agent = Publisher(settings, node=f"node-{i}", window=4)
        coverage = Coverage(span_from_ms=0, span_to_ms=10_000)
        report = reports.build(
            [], node=f"node-{i}", boot="b", start=0, seconds=10, seq=0, max_bytes=4096, coverage=coverage
        )

        async def delivered() -> bool:
            try:
                return (await agent.send(report, fresh=False)).messages == 1  # noqa: B023
            except TransientError:  # the auth service may still be starting
                return False

        try:
            await eventually(delivered)
        finally:
            await agent.close()
    admin = replace(_settings(servers, "kubenetmon-admin"))
    async with await Broker.connect(admin, name="t-admin", wait_s=5) as broker:
        assert (await broker.stream_info("raw")).messages == MEMBERS
