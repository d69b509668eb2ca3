"""kubenetmon on a three-node JetStream cluster: R3 topology from ``nats init``, and publishes that survive
the death of the stream leader without a message lost or stored twice.

The publish test drives the agent's own ``Publisher`` the way the agent's service does (a report that
was not wholly acknowledged is sent again, with the same message ids) while the RAW stream's leader is
SIGKILLed: publishes meet the election and are sent again, by the broker while the stream has no leader
or by the agent after a timeout, and the stream then holds every id exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import nats
from prometheus_client import REGISTRY

from kubenetmon.agent.backlog import RETRY_S
from kubenetmon.agent.publisher import Publisher
from kubenetmon.agent.reports import Report, build
from kubenetmon.shared import topology
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.nats import NatsServer, nats_settings_for
from tests.fixtures.nats_cluster import NatsCluster, cluster_settings, leader_name, stored_ids
from tests.support.commands import KUBENETMON, flags, made_the_whole_topology
from tests.support.waiting import wait_until

BEFORE_KILL = 40
AFTER_KILL = 40
IN_FLIGHT = 8
ROUNDS = 3


def _init(settings: NatsSettings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBENETMON, "nats", "init", *flags(settings)], capture_output=True, text=True, timeout=60
    )


def _consumer_replicas(server: NatsServer) -> dict[str, int]:
    """Durable consumer name -> replicas, from the server's own monitoring view (``/jsz``)."""
    url = f"http://{server.host}:{server.monitor_port}/jsz?consumers=true&config=true"
    with urllib.request.urlopen(url, timeout=5) as resp:
        jsz: dict[str, Any] = json.load(resp)
    out: dict[str, int] = {}
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            for consumer in stream.get("consumer_detail") or []:
                out[consumer["name"]] = 1 + len(consumer.get("cluster", {}).get("replicas") or [])
    return out


def test_nats_init_creates_three_replicas_of_every_stream_and_consumer(
    make_nats_cluster: Callable[..., NatsCluster],
) -> None:
    cluster = make_nats_cluster()
    settings = cluster_settings(cluster)
    init = _init(settings)
    assert init.returncode == 0, init.stderr
    assert made_the_whole_topology(init), init.stdout + init.stderr

    async def streams() -> list[tuple[int, str]]:
        async with await Broker.connect(settings, name="test", wait_s=10.0) as broker:
            return [
                ((s := await broker.stream_info(kind)).replicas, s.leader)
                for kind in ("raw", "enriched", "dlq", "meta")
            ]

    names = {s.name for s in cluster.servers}
    for replicas, leader in asyncio.run(streams()):
        assert replicas == 3 and leader in names
    assert _consumer_replicas(cluster.leader(settings, "raw")) == {"enricher": 3, "writer": 3}
    status = subprocess.run(
        [*KUBENETMON, "nats", "status", *flags(settings)], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and "3 replicas led by n" in status.stdout, status.stdout
    again = _init(settings)
    assert again.returncode == 0 and "topology: 7 unchanged" in again.stdout, again.stdout


def test_a_single_replica_topology_moves_to_three_in_place_lease_bucket_included(
    make_nats_cluster: Callable[..., NatsCluster],
) -> None:
    """Moving from one server's R1 to a cluster's R3: ``nats init`` scales every stream, and the metadata
    role's lease bucket with them, in place, keeping what they hold (a lone-replica bucket would stop
    the metadata role whenever its one server did)."""
    cluster = make_nats_cluster()
    settings = cluster_settings(cluster)
    single = dataclasses.replace(settings, replicas=1)
    first = _init(single)
    assert first.returncode == 0 and made_the_whole_topology(first), first.stdout + first.stderr
    bucket = f"{settings.stream_prefix}_metadata"

    async def put_a_lease() -> None:
        async with await Broker.connect(single, name="test", wait_s=10.0) as broker:
            kv = await broker.bucket("metadata")
            assert kv is not None
            await kv.put("lease", b"holder-1")

    asyncio.run(put_a_lease())
    scaled = _init(settings)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    lines = scaled.stdout.splitlines()
    for kind in ("RAW", "ENRICHED", "DLQ", "META"):
        assert f"stream {settings.stream_prefix}_{kind}: updated (replicas: 1 -> 3)" in lines
    assert f"bucket {bucket}: updated (replicas: 1 -> 3)" in lines
    # the durable consumers follow their streams (the server scales them a moment later)
    wait_until(
        lambda: _consumer_replicas(cluster.leader(settings, "raw")) == {"enricher": 3, "writer": 3},
        timeout=30,
        what="the durable consumers to have three replicas",
        step=0.2,
    )

    async def bucket_after() -> tuple[int, bytes | None]:
        nc = await nats.connect(list(settings.urls))
        try:
            info = await nc.jetstream().stream_info(topology.bucket_stream(settings, "metadata"))
        finally:
            await nc.close()
        async with await Broker.connect(settings, name="test", wait_s=10.0) as broker:
            kv = await broker.bucket("metadata")
            entry = await kv.get("lease") if kv is not None else None
        return info.config.num_replicas or 1, entry.value if entry else None

    assert asyncio.run(bucket_after()) == (3, b"holder-1")
    again = _init(settings)
    assert again.returncode == 0 and "topology: 7 unchanged" in again.stdout, again.stdout


def test_more_replicas_than_servers_is_a_conflict_naming_it(nats_server: NatsServer) -> None:
    settings = nats_settings_for(nats_server, replicas=3)
    init = _init(settings)
    assert init.returncode == 1
    assert "conflict (server refused to create it" in init.stdout
    assert "replicas" in init.stdout.lower()


def _report(seq: int) -> Report:
    return build(
        [], node="node-x", boot="boot-1", start=1_700_000_000 + seq, seconds=1, seq=seq, max_bytes=4096
    )


def _broker_retries() -> float:
    """RAW publishes the broker sent again (same id) because the stream had no leader at that moment."""
    return REGISTRY.get_sample_value("kubenetmon_nats_publish_retries_total", {"stream": "raw"}) or 0.0


def _retried(tally: Counter[str]) -> bool:
    """Some publish met the election and was sent again: by the agent (report) or by the broker."""
    return tally["failed"] > 0 or _broker_retries() > tally["broker_before"]


async def _send_until_acknowledged(publisher: Publisher, report: Report, tally: Counter[str]) -> None:
    """What the agent's service does: a report not wholly acknowledged is sent again, same ids, after
    the service's retry delay."""
    failures = 0
    while True:
        try:
            sent = await publisher.send(report)
        except TransientError:
            tally["failed"] += 1
            failures += 1
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])  # pacing, as the service does
            continue
        tally["duplicate"] += sent.duplicates
        return


async def test_a_publish_cut_by_the_leaders_death_is_retried_under_its_id_and_stored_once(
    make_nats_cluster: Callable[..., NatsCluster],
) -> None:
    cluster = make_nats_cluster()
    settings = cluster_settings(cluster)
    assert (await asyncio.to_thread(_init, settings)).returncode == 0
    publisher = Publisher(settings, node="node-x", window=IN_FLIGHT)
    tally: Counter[str] = Counter(broker_before=int(_broker_retries()))
    seq, victims = 0, []

    async def send(count: int) -> None:  # IN_FLIGHT reports at a time, as a backlog is sent
        nonlocal seq
        for first in range(seq, seq + count, IN_FLIGHT):
            await asyncio.gather(
                *(
                    _send_until_acknowledged(publisher, _report(n), tally)
                    for n in range(first, first + IN_FLIGHT)
                )
            )
        seq += count

    try:
        await send(BEFORE_KILL)
        # A leader's death is noticed at once through its closed routes, and the election can be quick:
        # if no publish was in flight at that moment, nothing met it; kill the next leader, up to ROUNDS.
        for _ in range(ROUNDS):
            killer = asyncio.create_task(asyncio.to_thread(cluster.kill_leader, settings, "raw"))
            while not killer.done():
                await send(IN_FLIGHT)
            await send(AFTER_KILL)
            victims.append((await killer).name)
            assert await leader_name(settings, "raw") not in ("", victims[-1])
            await asyncio.to_thread(cluster.start)  # the victim back and caught up
            if _retried(tally):
                break
    finally:
        await publisher.close()

    async with await Broker.connect(settings, name="test-read", wait_s=10.0) as broker:
        ids = await stored_ids(broker, "raw")
    print(
        f"{seq} reports; resent by the agent: {tally['failed']}, by the broker (no leader yet): "
        f"{_broker_retries() - tally['broker_before']:g}; dropped as duplicates: {tally['duplicate']}; "
        f"leaders killed: {victims}"
    )
    assert set(ids) == {_report(n).msg_id(0) for n in range(seq)}
    assert max(ids.values()) == 1
    assert _retried(tally), f"in {ROUNDS} leader kills no publish met an election"
