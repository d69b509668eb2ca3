"""The writer tests' fixtures: a ``Writer`` in a task on its own sink, its settings, a query here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from kubenetmon.shared.broker import Broker
from kubenetmon.writer.settings import ClickHouseSettings, WriterSettings
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.worker import Writer
from tests.support.messages import pin_interval
from tests.support.writer import Running


@pytest.fixture(autouse=True)
def _one_interval_per_test() -> None:
    """Rows built by ``messages.row`` in one test share an interval start, recent for that test."""
    pin_interval()


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
