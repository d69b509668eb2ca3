"""The replay tests: a small cluster, RAW traffic at real times, stream readers, a command run to its end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from kubenetmon.shared.broker import Broker, Delivery
from kubenetmon.shared.schema import EnrichedMessage, RawMessage, RawRow, decode_enriched, encode_raw
from kubenetmon.writer.settings import WriterSettings
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.worker import Writer
from tests.support.builders import message, node, pod, raw_row, service
from tests.support.commands import KUBENETMON
from tests.support.processes import Process
from tests.support.waiting import eventually

DEADLINE_S = 45.0
INTERVAL = 60

NODES = [
    node("n1", "192.168.0.1", zone="us-west-2a", provider_id="aws:///us-west-2a/i-0n1"),
    node("n2", "192.168.0.2", zone="us-west-2b", provider_id="aws:///us-west-2b/i-0n2"),
]
SERVICES = [service("api", "10.96.0.20")]


def cluster_pods(*, web0_app: str = "web", created: float) -> list[dict[str, Any]]:
    """web-0..1 on n1, api-0..1 on n2; ``web0_app`` is web-0's ``app`` label (the fix under test)."""

    def member(name: str, ip: str, host: str, app: str, owner: str) -> dict[str, Any]:
        return pod(name, ip, node=host, labels={"app": app}, owner=("StatefulSet", owner), created=created)

    return [
        member("web-0", "10.1.0.10", "n1", web0_app, "web"),
        member("web-1", "10.1.0.11", "n1", "web", "web"),
        member("api-0", "10.1.1.10", "n2", "api", "api"),
        member("api-1", "10.1.1.11", "n2", "api", "api"),
    ]


def write_inventory(path: Path, objects: Sequence[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
    return path


def base_time(*, hours_ago: float = 1.0) -> int:
    """An interval start about ``hours_ago`` before now, aligned to the interval."""
    return int(time.time() - hours_ago * 3600) // INTERVAL * INTERVAL


def traffic_rows(k: int) -> list[RawRow]:
    """What n1 saw in interval ``k``: web-0 -> api (via the Service), web-1 -> S3, a node flow (dropped)."""
    return [
        raw_row(
            "tcp",
            ("10.1.0.10", 40000 + k, "10.96.0.20", 80),
            ("10.1.1.10", 8080, "10.1.0.10", 40000 + k),
            orig_counters=(k + 1, 1000 + 7 * k),
            reply_counters=(k + 2, 5000 + 11 * k),
        ),
        raw_row(
            "tcp",
            ("10.1.0.11", 41000 + k, "3.5.140.9", 443),
            ("3.5.140.9", 443, "192.168.0.1", 41000 + k),
            orig_counters=(3, 300 + k),
            reply_counters=(4, 400 + k),
        ),
        raw_row(
            "tcp", ("192.168.0.2", 50000 + k, "10.1.0.10", 80), ("10.1.0.10", 80, "192.168.0.2", 50000 + k)
        ),
    ]


def interval_messages(base: int, count: int, *, node_name: str = "n1", seq: int = 0) -> list[RawMessage]:
    return [
        message(traffic_rows(k), node=node_name, start=base + INTERVAL * k, seconds=INTERVAL, seq=seq)
        for k in range(count)
    ]


async def publish_raw(broker: Broker, msgs: Sequence[RawMessage]) -> None:
    for msg in msgs:
        await broker.publish(broker.raw_subject(msg.node), encode_raw(msg), msg_id=msg.msg_id)


async def read_stream(broker: Broker, kind: str, *, subject: str | None = None) -> list[Delivery]:
    """Every message of stream ``kind`` right now (through an ephemeral consumer)."""
    info = await broker.stream_info(kind)
    got: list[Delivery] = []
    if info.messages == 0:
        return got
    source = await broker.ephemeral(kind, filter_subject=subject)
    try:
        pending = (await source.info()).num_pending
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < pending and time.monotonic() < deadline:
            got += await source.fetch(max(1, pending - len(got)), 0.5)
    finally:
        await source.close()
    return got


async def replayed(broker: Broker, run: str) -> list[EnrichedMessage]:
    """The ENRICHED messages a ``replay raw`` run published (by its id tag)."""
    deliveries = await read_stream(broker, "enriched")
    return [decode_enriched(d.data) for d in deliveries if d.msg_id.startswith(f"enriched/{run}/")]


def rows_of(messages: Sequence[EnrichedMessage]) -> list[dict[str, Any]]:
    out = []
    for msg in messages:
        for i in range(msg.row_count):
            out.append({name: values[i] for name, values in zip(msg.columns, msg.data, strict=True)})
    return out


async def settled(broker: Broker, consumer: str) -> bool:
    stats = await broker.consumer_info(consumer)
    return stats.num_pending == 0 and stats.num_ack_pending == 0


async def run_cli(spawner: Callable[..., Process], *argv: str, name: str) -> tuple[int, str, str]:
    """Run ``kubenetmon <argv>`` to completion: (exit code, stdout, stderr)."""
    proc = spawner(*KUBENETMON, *argv, name=name)
    code = await proc.wait()
    return code, proc.out, proc.log


QUICK_WRITER = WriterSettings(batch_age_s=0.2)
"""A batch no older than 0.2 s: a test's few messages are written at once."""


async def write_until_settled(broker: Broker, sink: Sink, settings: WriterSettings = QUICK_WRITER) -> None:
    """A writer on ``broker``'s ``writer`` consumer into ``sink`` until ENRICHED is settled, then stopped."""
    stop = asyncio.Event()
    writer = Writer(
        source=await broker.pull("writer"),
        broker=broker,
        sink=sink,
        settings=settings,
        keepalive_s=0.5,
        drain_s=5,
    )
    task = asyncio.create_task(writer.run(stop))
    try:
        await eventually(lambda: settled(broker, "writer"))
    finally:
        stop.set()
        await task
