"""``kubenetmon writer``: a supervisor and W writer processes sharing the durable ``writer`` consumer.

Each worker process: connect to ClickHouse and migrate the schema (idempotent; retried while ClickHouse
is unavailable), with a ``chdb://`` target serve read-only queries for ``sql``/``top``, connect to NATS and
ensure the topology, report ready, then run the ``Writer`` loop until SIGTERM, flush and drain.

chDB allows one process per data directory, so with a ``chdb://`` DSN the pool runs exactly one worker
(and says so when more were asked for). This module wires settings to parts; the work is in ``worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import dataclass, replace

from kubenetmon.shared import logs, runtime
from kubenetmon.shared.broker import Broker, connect_ready_or_stop, preflight
from kubenetmon.shared.pool import Ready, supervise
from kubenetmon.shared.settings import (
    HttpSettings,
    NatsSettings,
    RuntimeSettings,
    add_http_arguments,
    add_log_arguments,
    add_nats_arguments,
    add_pool_arguments,
    add_runtime_arguments,
    http_settings,
    log_settings,
    nats_settings,
    pool_settings,
    runtime_settings,
)
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.endpoint import QueryServer
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import (
    ClickHouseSettings,
    WriterSettings,
    add_clickhouse_arguments,
    add_writer_arguments,
    clickhouse_settings,
    writer_settings,
)
from kubenetmon.writer.sink import Sink, SinkUnavailable
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


def configure(parser: argparse.ArgumentParser) -> None:
    add_clickhouse_arguments(parser)
    add_writer_arguments(parser)
    add_nats_arguments(parser)
    add_pool_arguments(parser)
    add_runtime_arguments(parser)
    add_http_arguments(parser)
    add_log_arguments(parser)


def config_from(args: argparse.Namespace) -> WriterConfig:
    nats = nats_settings(args)
    preflight(nats)  # a missing credentials file or CA is a configuration error, not an outage
    return WriterConfig(
        nats=nats,
        clickhouse=clickhouse_settings(args),
        writer=writer_settings(args),
        runtime=runtime_settings(args),
        http=http_settings(args),
    )


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    pool = pool_settings(args)
    logs.setup(log_settings(args), process="writer")
    target = parse_dsn(config.clickhouse.dsn)
    if target.kind == "chdb" and pool.workers > 1:
        log.warning(
            "chDB allows one process per data directory: running 1 writer process, not %d",
            pool.workers,
            extra={"clickhouse": target.display},
        )
        pool = replace(pool, workers=1)
    return supervise(
        "kubenetmon.writer.cli:work",
        settings=config,
        pool=pool,
        runtime=config.runtime,
        http=config.http,
        logs=log_settings(args),
        name="writer",
    )


def work(config: WriterConfig, ready: Ready) -> int:
    """A worker process (the pool's target)."""
    return runtime.run(
        lambda stop: serve(config, ready=ready, stop=stop), drain_timeout_s=config.runtime.drain_timeout_s
    )


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
    delay, attempt = config.writer.retry_min_s, 0
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
            if attempt == 1 or attempt % 10 == 0:
                log.warning("ClickHouse unavailable at start (attempt %d): %s", attempt, exc)
            await runtime.sleep_or_stop(stop, delay)
            delay = min(config.writer.retry_max_s, delay * 2)
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
