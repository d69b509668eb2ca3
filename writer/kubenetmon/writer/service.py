"""The body of one writer process: from a spawned worker's start to its drained exit.

In order: open ClickHouse and migrate the schema (idempotent; retried while ClickHouse is unavailable),
with a ``chdb://`` target serve read-only queries for ``sql``/``top`` (``query.endpoint``), connect to
NATS and ensure the topology, report ready, then run the ``Writer`` loop (and ``trim``, which makes room
in ENRICHED) until SIGTERM, flush and drain. A full store makes the process not ready until it has room.

``WriterConfig`` is everything the process needs; ``cli`` builds it from flags in the supervisor and the
pool hands it to ``work`` across the spawn. This module parses nothing and owns no policy of its own:
the fetch -> batch -> insert -> ack loop is in ``worker``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from kubenetmon.shared import backoff, runtime
from kubenetmon.shared.broker import Broker, connect_ready_or_stop
from kubenetmon.shared.consumer import STORE_FULL
from kubenetmon.shared.pool import Ready, run_worker
from kubenetmon.shared.settings import HttpSettings, NatsSettings, RuntimeSettings
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.query.endpoint import QueryServer
from kubenetmon.writer.settings import ClickHouseSettings, WriterSettings
from kubenetmon.writer.sink import Sink, SinkUnavailable
from kubenetmon.writer.trim import trim_loop
from kubenetmon.writer.worker import Writer

log = logging.getLogger(__name__)

_CONNECT_ATTEMPT_S = 5.0


@dataclass(frozen=True)
class WriterConfig:
    """Everything a worker process needs (picklable: it crosses the spawn)."""

    nats: NatsSettings
    clickhouse: ClickHouseSettings
    writer: WriterSettings
    runtime: RuntimeSettings
    http: HttpSettings

    @property
    def keepalive_s(self) -> float:
        """In-progress interval: the configured one, but well inside the consumer's ack wait."""
        return min(self.writer.keepalive_s, self.nats.ack_wait_s / 3)

    @property
    def drain_s(self) -> float:
        """Time the final flush may retry, leaving room to settle and drain NATS within the deadline."""
        return self.runtime.drain_timeout_s * 0.6


def work(config: WriterConfig, ready: Ready) -> int:
    """A worker process (the pool's target)."""
    return run_worker(serve, config, ready)


async def serve(config: WriterConfig, *, ready: Ready, stop: asyncio.Event) -> int:
    sink = Sink(config.clickhouse)
    endpoint: QueryServer | None = None
    broker: Broker | None = None
    try:
        if not await _prepare(sink, config, stop=stop):
            return 0
        if sink.embedded and config.writer.query_endpoint:
            endpoint = QueryServer(sink.target.path, lambda: Sink(config.clickhouse, use_database=True))
            endpoint.start()
        broker = await _connect(config, name=ready.name, stop=stop)
        if broker is None:
            return 0
        broker.capacity.listen(lambda full: ready.hold(STORE_FULL, full))
        source = await broker.pull("writer")
        writer = Writer(
            source=source,
            broker=broker,
            sink=sink,
            settings=config.writer,
            keepalive_s=config.keepalive_s,
            drain_s=config.drain_s,
        )
        ready()
        log.info(
            "writing to ClickHouse",
            extra={
                "clickhouse": sink.target.display,
                "table": f"{sink.database}.{sink.table}",
                "pid": os.getpid(),
            },
        )
        try:
            async with runtime.RootTasks(stop) as tasks:
                tasks.start("trim-enriched", trim_loop(broker, stop=stop))
                await writer.run(stop)
        finally:
            ready(False)
            await source.close()
        return 0
    finally:
        if broker is not None:
            await broker.drain()
        if endpoint is not None:
            endpoint.stop()
        await asyncio.to_thread(sink.close)


async def _prepare(sink: Sink, config: WriterConfig, *, stop: asyncio.Event) -> bool:
    """Open ClickHouse (a chDB directory is owned from here on) and migrate the schema unless told not
    to, retrying while ClickHouse is unavailable; False if stopped first."""
    attempt = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(sink.connect)
            if config.writer.migrate:
                out = await asyncio.to_thread(
                    migrate,
                    sink,
                    database=sink.database,
                    table=sink.table,
                    ttl_days=config.clickhouse.ttl_days,
                    cluster=config.clickhouse.cluster,
                )
                log.info("schema ready", extra={"version": out.after, "applied": list(out.applied)})
            return True
        except SinkUnavailable as exc:
            attempt += 1
            if backoff.now_and_then(attempt, every=10):
                log.warning("ClickHouse unavailable at start (attempt %d): %s", attempt, exc)
            delay = backoff.exponential(
                attempt - 1, base_s=config.writer.retry_min_s, max_s=config.writer.retry_max_s
            )
            await runtime.sleep_or_stop(stop, delay)
    return False


async def _connect(config: WriterConfig, *, name: str, stop: asyncio.Event) -> Broker | None:
    """Connect to NATS and ensure the topology, retrying until it works or ``stop`` is set."""
    return await connect_ready_or_stop(
        config.nats,
        name=name,
        stop=stop,
        wait_s=_CONNECT_ATTEMPT_S,
        retry_s=config.writer.retry_min_s,
        log=log,
    )
