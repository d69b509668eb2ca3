"""Helpers for the writer's tests: publish ENRICHED, run a ``Writer`` in a task, wait on conditions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_REASON
from kubenetmon.shared.deliveries import ConsumerStats, Delivery
from kubenetmon.shared.schema import EnrichedMessage, encode_enriched
from kubenetmon.writer.settings import ClickHouseSettings, WriterSettings
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.worker import Writer
from tests.support import KUBENETMON, Process, eventually, flags, spawn  # noqa: F401 (re-exported)
from tests.writer.messages import pin_interval

DEADLINE_S = 30.0


@pytest.fixture(autouse=True)
def _one_interval_per_test() -> None:
    """Rows built by ``messages.row`` in one test share an interval start, recent for that test."""
    pin_interval()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def publish(
    broker: Broker, msgs: Sequence[EnrichedMessage | bytes], *, msg_ids: Sequence[str] = ()
) -> None:
    for i, msg in enumerate(msgs):
        if isinstance(msg, bytes):
            await broker.publish(
                broker.enriched_subject("node-a"), msg, msg_id=msg_ids[i] if msg_ids else f"raw-{i}"
            )
        else:
            msg_id = msg_ids[i] if msg_ids else msg.msg_id
            await broker.publish(broker.enriched_subject(msg.node), encode_enriched(msg), msg_id=msg_id)


async def writer_stats(broker: Broker) -> ConsumerStats:
    return await broker.consumer_info("writer")


async def settled(broker: Broker) -> bool:
    stats = await writer_stats(broker)
    return stats.num_pending == 0 and stats.num_ack_pending == 0


async def dlq(broker: Broker, count: int) -> list[Delivery]:
    source = await broker.ephemeral("dlq")
    got: list[Delivery] = []
    try:
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < count:
                got += await source.fetch(count - len(got), 0.5)
        got += await source.fetch(10, 0.2)  # and nothing more than expected
    finally:
        await source.close()
    return got


def reasons(deliveries: Sequence[Delivery]) -> list[str]:
    return sorted(d.headers.get(H_REASON, "") for d in deliveries)


class Running:
    """A ``Writer`` on its own sink, in a task; ``stop()`` drains it like SIGTERM would."""

    def __init__(self, writer: Writer, task: asyncio.Task[None], stop: asyncio.Event, sink: Sink) -> None:
        self.writer, self.task, self._stop, self.sink = writer, task, stop, sink

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self.task, DEADLINE_S)


@pytest.fixture
def writer_settings() -> WriterSettings:
    return WriterSettings(batch_rows=1000, batch_age_s=0.2, fetch_size=50, retry_min_s=0.1, retry_max_s=0.5)


@pytest.fixture
async def start_writer(
    broker: Broker, chdb_settings: ClickHouseSettings, writer_settings: WriterSettings
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    running: list[Running] = []

    async def start(*, drain_s: float = 10.0, keepalive_s: float = 0.5, **overrides: Any) -> Running:
        sink = Sink(chdb_settings)
        stop = asyncio.Event()
        writer = Writer(
            source=await broker.pull("writer"),
            broker=broker,
            sink=sink,
            settings=replace(writer_settings, **overrides),
            keepalive_s=keepalive_s,
            drain_s=drain_s,
        )
        run = Running(writer, asyncio.create_task(writer.run(stop)), stop, sink)
        running.append(run)
        return run

    yield start
    for run in running:
        if not run.task.done():
            await run.stop()
        await asyncio.to_thread(run.sink.close)


@pytest.fixture
def query(chdb_settings: ClickHouseSettings) -> Iterator[Callable[[str], list[tuple[Any, ...]]]]:
    """Run a query in this process (``{t}`` is the table, ``{x}`` its exact view)."""
    sink = Sink(chdb_settings)
    table = f"{sink.database}.{sink.table}"

    def run(sql: str) -> list[tuple[Any, ...]]:
        return sink.query(sql.format(t=table, x=f"{table}_exact")).rows

    yield run
    sink.close()
