"""``kubenetmon writer``: a supervisor and W writer processes sharing the durable ``writer`` consumer.

Each worker process: connect to ClickHouse and migrate the schema (idempotent; retried while ClickHouse
is unavailable), with a ``chdb://`` target serve read-only queries for ``sql``/``top``, connect to NATS and
ensure the topology, report ready, then run the ``Writer`` loop until SIGTERM, flush and drain.

chDB allows one process per data directory, so with a ``chdb://`` DSN the pool runs exactly one worker
(and says so when more were asked for). This module parses flags into a ``WriterConfig`` and starts the
pool; what each worker process runs is in ``service``, the loop itself in ``worker``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from kubenetmon.shared import logs
from kubenetmon.shared.broker import preflight
from kubenetmon.shared.pool import supervise_role
from kubenetmon.shared.settings import (
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
from kubenetmon.writer.service import WriterConfig
from kubenetmon.writer.settings import (
    add_clickhouse_arguments,
    add_writer_arguments,
    clickhouse_settings,
    writer_settings,
)

log = logging.getLogger(__name__)


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
    return supervise_role(
        "kubenetmon.writer.service:work", config=config, pool=pool, logs=log_settings(args), name="writer"
    )
