"""The META stream end to end: the topology creates it, a real enricher (two processes, watching a
Kubernetes API mock server) records what it observes there once, and ``replay raw --metadata as-of``
attributes an IP reused by two pods by time from that record."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kubenetmon.enricher.history import Record, Recorder, decode
from kubenetmon.enricher.recording import MetaPublisher
from kubenetmon.enricher.replay import RawReplay, replay_raw
from kubenetmon.enricher.settings import EnricherOptions, LabelOptions
from kubenetmon.shared import topology
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.replay.window import Window
from kubenetmon.shared.schema import RawRow
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.kube import KubeApi
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.builders import message, pod, raw_row
from tests.support.replay import (
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    publish_raw,
    read_stream,
    replayed,
    rows_of,
)

X = "10.1.5.5"


def test_the_topology_has_a_meta_stream_with_limits_retention() -> None:
    settings = NatsSettings(stream_prefix="K", subject_prefix="k")
    [meta] = [s for s in topology.stream_specs(settings) if s.name == "K_META"]
    assert (meta.subjects, meta.retention, meta.max_age_s) == (("k.meta.>",), "limits", 8 * 86400.0)
    assert topology.meta_subject(settings, "pods") == "k.meta.pods"


async def _meta(broker: Broker) -> list[Record]:
    return [decode(d.data) for d in await read_stream(broker, "meta")]


async def test_enrichers_record_changes_once_and_as_of_replays_them(
    broker: Broker,
    nats_settings: NatsSettings,
    kube_api: KubeApi,
    kubeconfig: Path,
    spawn: Callable[..., Process],
) -> None:
    base = base_time()
    pods = [*cluster_pods(created=base - 7200), pod("batch-a", X, node="n2", created=base - 7200)]
    for resource, objs in (("nodes", NODES), ("services", SERVICES), ("pods", pods)):
        for obj in objs:
            kube_api.add(resource, obj)
    argv = [
        "--kubeconfig",
        str(kubeconfig),
        "--workers",
        "2",
        "--metadata-snapshot",
        "0",
        "--http-port",
        "-1",
    ]
    spawn(*KUBENETMON, "enricher", *flags(nats_settings), *argv, name="enricher")

    async def recorded(kind: str, event: str, name: str) -> list[Record]:
        return [
            r
            for r in await _meta(broker)
            if (r.kind, r.event, r.obj.get("metadata", {}).get("name")) == (kind, event, name)
        ]

    async def everything_listed() -> bool:
        records = await _meta(broker)
        return Counter(r.kind for r in records if r.event == "MODIFIED") == {
            "pods": 5,
            "nodes": 2,
            "services": 1,
        }

    await eventually(everything_listed)  # both workers listed everything: each object stored once
    kube_api.delete("pods", pods[-1])

    async def deleted() -> bool:
        return len(await recorded("pods", "DELETED", "batch-a")) == 1

    await eventually(deleted)
    [gone] = await recorded("pods", "DELETED", "batch-a")
    b_created = math.ceil(gone.at) + 1
    kube_api.add("pods", pod("batch-b", X, node="n2", created=b_created))

    async def added() -> bool:
        return len(await recorded("pods", "ADDED", "batch-b")) == 1

    await eventually(added)
    assert len(await recorded("pods", "DELETED", "batch-a")) == 1  # two processes, one record

    def to_x(k: int) -> list[RawRow]:
        return [raw_row("tcp", ("10.1.0.10", 33000 + k, X, 9000), (X, 9000, "10.1.0.10", 33000 + k))]

    # as-of knows batch-b from when an enricher saw it, which a busy machine may put seconds after its
    # creation time: the later flow starts after both
    [seen] = await recorded("pods", "ADDED", "batch-b")
    later_start = max(b_created, math.ceil(seen.at)) + 1
    await publish_raw(
        broker, [message(to_x(0), node="n1", start=base), message(to_x(1), node="n1", start=later_start)]
    )
    config = RawReplay(
        window=Window(start=base, end=later_start + 60),
        run_id="asof",
        nats=nats_settings,
        label=LabelOptions(cloud="aws", region="us-west-2"),
        enricher=EnricherOptions(interval_s=0),  # the later flow starts at a second of its own
        metadata="as-of",
    )
    assert await replay_raw(config, stop=asyncio.Event()) == 0
    got = {(r["intervalStartTime"], r["remotePod"]) for r in rows_of(await replayed(broker, "asof"))}
    assert got == {(base, "batch-a"), (later_start, "batch-b")}


async def test_a_snapshot_at_each_period_boundary_rerecords_everything(broker: Broker) -> None:
    boundary = 86400.0 * 20000
    times = iter([boundary - 0.5])  # the first reading is before the boundary, every later one after it
    publisher = MetaPublisher(Recorder(), snapshot_s=86400, clock=lambda: next(times, boundary + 0.1))
    publisher.observe("pods", "LISTED", cluster_pods(created=boundary - 7200), at=boundary - 100)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(broker, stop=stop))

    async def snapshotted() -> bool:
        return any(r.msg_id.startswith("meta/snap/20000/") for r in await _meta(broker))

    await eventually(snapshotted)
    stop.set()
    await task
    records = await _meta(broker)
    snap = [r for r in records if r.msg_id.startswith("meta/snap/20000/")]
    assert Counter((r.kind, r.event) for r in snap) == {
        ("pods", "MODIFIED"): 4,
        ("pods", "LISTED"): 1,
        ("nodes", "LISTED"): 1,
        ("services", "LISTED"): 1,
    }
    assert len(records) == len(snap) + 5  # the list itself: 4 pods and its marker


def test_a_full_queue_drops_the_oldest_records() -> None:
    publisher = MetaPublisher(Recorder(), snapshot_s=0, max_pending=3)
    publisher.observe("pods", "LISTED", cluster_pods(created=0), at=1.0)
    assert (publisher.pending, publisher.dropped) == (3, 2)
