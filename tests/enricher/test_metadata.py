"""One watcher, many enrichers: ``kubenetmon metadata`` replicas and ``--metadata-source meta`` enrichers
as real processes, against a real nats-server and the Kubernetes API test server (its requests counted
per kind and verb)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.enricher.replay import RawReplay, replay_raw
from kubenetmon.enricher.settings import EnricherOptions, LabelOptions
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.replay.window import Window
from kubenetmon.shared.schema import RawRow, decode_enriched
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.kube import KubeApi
from tests.fixtures.nats import nats_settings_for
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.builders import message, pod, raw_row
from tests.support.replay import (
    NODES,
    SERVICES,
    cluster_pods,
    publish_raw,
    read_stream,
    replayed,
    rows_of,
)

TTL = 3.0
"""Short, for the hand-over tests. A test that counts list and watch requests runs its replicas with
``STEADY_TTL``: a holder that misses renewals for 3 s (a busy runner) hands over, rightly, and the new
holder lists and watches again."""
STEADY_TTL = 60.0
KINDS = ("pods", "nodes", "services")


def to(ip: str, k: int) -> list[RawRow]:
    """web-0 (on n1) -> ``ip``: the remote end is the pod under test."""
    return [raw_row("tcp", ("10.1.0.10", 30000 + k, ip, 9000), (ip, 9000, "10.1.0.10", 30000 + k))]


class Cluster:
    """The processes of one test and what they answer."""

    def __init__(self, broker: Broker, spawn: Callable[..., Process], nats: NatsSettings) -> None:
        self.broker = broker
        self.spawn = spawn
        self.nats = nats
        self.sent = 0

    def metadata(self, kubeconfig: Path, name: str, *, ttl: float = TTL) -> Process:
        argv = ["--kubeconfig", str(kubeconfig), "--lease-ttl", f"{ttl}s", "--http-port", "-1"]
        return self.spawn(*KUBENETMON, "metadata", *flags(self.nats), *argv, name=name)

    def enricher(self, workers: int) -> Process:
        argv = ["--metadata-source", "meta", "--workers", str(workers), "--http-port", "-1"]
        return self.spawn(*KUBENETMON, "enricher", *flags(self.nats), *argv, name="enricher")

    async def holder(self) -> str:
        bucket = await self.broker.bucket("metadata")
        entry = await bucket.get("lease") if bucket is not None else None
        return str(json.loads(entry.value)["holder"]) if entry is not None else ""

    async def attributed(self, ip: str, name: str) -> bool:
        """Send one more interval of traffic to ``ip``; True once some ENRICHED row names pod ``name``."""
        self.sent += 1
        start = int(time.time()) // 60 * 60  # the current interval (the pod may be seconds old); ids by seq
        await publish_raw(self.broker, [message(to(ip, self.sent), node="n1", start=start, seq=self.sent)])
        rows = rows_of([decode_enriched(d.data) for d in await read_stream(self.broker, "enriched")])
        return any(r["remotePod"] == name for r in rows)


def ready_workers(proc: Process) -> list[int]:
    return [r["pid"] for r in proc.records() if r.get("msg") == "enriching"]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def one_list_and_watch_per_kind(api: KubeApi, terms: int) -> bool:
    return all(api.requests[(k, "list")] == terms and api.requests[(k, "watch")] == terms for k in KINDS)


@pytest.fixture
def cluster(
    broker: Broker, spawn: Callable[..., Process], nats_settings: NatsSettings, kube_api: KubeApi
) -> Cluster:
    for resource, objs in (("nodes", NODES), ("services", SERVICES), ("pods", cluster_pods(created=0))):
        for obj in objs:
            kube_api.add(resource, obj)
    return Cluster(broker, spawn, nats_settings)


async def test_two_replicas_and_four_workers_make_one_list_and_watch_per_kind(
    cluster: Cluster, kube_api: KubeApi, kubeconfig: Path
) -> None:
    replicas = [cluster.metadata(kubeconfig, f"metadata-{i}", ttl=STEADY_TTL) for i in range(2)]
    enricher = cluster.enricher(workers=4)
    await eventually(lambda: len(ready_workers(enricher)) == 4)  # ready only once built from META
    assert one_list_and_watch_per_kind(kube_api, terms=1)

    created = time.time()
    kube_api.add("pods", pod("new-0", "10.1.7.7", node="n2", created=created))
    await eventually(lambda: cluster.attributed("10.1.7.7", "new-0"), within=10.0)

    # A worker restart rebuilds its index from META, not from the API server.
    first = ready_workers(enricher)
    os.kill(first[0], signal.SIGKILL)
    await eventually(lambda: len(ready_workers(enricher)) == 5)
    assert one_list_and_watch_per_kind(kube_api, terms=1)
    assert all(p.proc.poll() is None for p in replicas)

    # The as-of replay reads the same META.
    base = int(created) // 60 * 60 + 60
    await publish_raw(cluster.broker, [message(to("10.1.7.7", 999), node="n1", start=base)])
    config = RawReplay(
        window=Window(start=base, end=base + 60),
        run_id="asof",
        nats=cluster.nats,
        label=LabelOptions(),
        enricher=EnricherOptions(),
        metadata="as-of",
    )
    assert await replay_raw(config, stop=asyncio.Event()) == 0
    assert {r["remotePod"] for r in rows_of(await replayed(cluster.broker, "asof"))} == {"new-0"}


async def test_sigkill_of_the_active_replica_hands_over_within_the_lease_ttl(
    cluster: Cluster, kube_api: KubeApi, kubeconfig: Path
) -> None:
    replicas = [cluster.metadata(kubeconfig, f"metadata-{i}") for i in range(2)]
    enricher = cluster.enricher(workers=2)
    await eventually(lambda: len(ready_workers(enricher)) == 2)
    holder = await cluster.holder()
    child = int(holder.rsplit("/", 1)[1])
    supervisor = parent_of(child)
    [active] = [p for p in replicas if p.proc.pid == supervisor]
    # The whole replica dies at once, as with its node: no release, the lease must expire.
    active.signal(signal.SIGSTOP)
    os.kill(child, signal.SIGKILL)
    active.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    kube_api.add("pods", pod("late-0", "10.1.8.8", node="n2", created=time.time()))

    async def taken_over() -> bool:
        return (await cluster.holder()) not in ("", holder)

    await eventually(taken_over, within=2 * TTL + 5)
    took = time.monotonic() - killed_at
    print(f"takeover {took:.1f}s after SIGKILL (lease TTL {TTL}s)")
    await eventually(lambda: cluster.attributed("10.1.8.8", "late-0"), within=15.0)
    assert one_list_and_watch_per_kind(kube_api, terms=2)


@pytest.mark.slow
async def test_after_a_nats_restart_the_watcher_and_the_readers_carry_on(
    make_nats_server: Callable[..., NatsServer],
    spawn: Callable[..., Process],
    kube_api: KubeApi,
    kubeconfig: Path,
) -> None:
    server = make_nats_server()
    settings = nats_settings_for(server)
    for resource, objs in (("nodes", NODES), ("services", SERVICES), ("pods", cluster_pods(created=0))):
        for obj in objs:
            kube_api.add(resource, obj)
    async with await Broker.connect(settings, name="test-restart", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        cluster = Cluster(broker, spawn, settings)
        replicas = [cluster.metadata(kubeconfig, f"metadata-{i}") for i in range(2)]
        enricher = cluster.enricher(workers=2)
        await eventually(lambda: len(ready_workers(enricher)) == 2)
        kube_api.add("pods", pod("before-0", "10.1.9.1", node="n2", created=time.time()))
        await eventually(lambda: cluster.attributed("10.1.9.1", "before-0"), within=10.0)

        await asyncio.to_thread(server.restart)  # memory-stored consumers of the readers are gone
        kube_api.add("pods", pod("after-0", "10.1.9.2", node="n2", created=time.time()))

        async def attributed_after() -> bool:
            try:
                return await cluster.attributed("10.1.9.2", "after-0")
            except TransientError:  # the test's own connection is still reconnecting
                return False

        await eventually(attributed_after, within=30.0)
        assert all(p.proc.poll() is None for p in [*replicas, enricher])
