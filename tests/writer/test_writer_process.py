"""``kubenetmon writer`` as processes: one owner per chDB directory, ``sql`` beside it, SIGTERM, SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.query.endpoint import live_endpoint
from kubenetmon.writer.query.sql import run_query
from kubenetmon.writer.settings import ClickHouseSettings
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.holder import Holder
from tests.support.messages import messages, total_bytes
from tests.support.writer import publish, settled, writer_stats

Spawn = Callable[..., Process]
SUMS = "SELECT count(), sum(bytes) FROM network_flows_0_exact"


def _writer_argv(nats: NatsSettings, ch: ClickHouseSettings, *extra: str) -> list[str]:
    return [
        *flags(nats),
        *flags(ch),
        "--batch-age",
        "200ms",
        "--http-port",
        "-1",
        "--log-format",
        "text",
        *extra,
    ]


def _sql(ch: ClickHouseSettings, query: str, *, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBENETMON, "sql", "--clickhouse-dsn", ch.dsn, "--format", fmt, query],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_one_writer_owns_chdb_serves_sql_and_drains_on_sigterm(
    broker: Broker, nats_settings: NatsSettings, chdb_settings: ClickHouseSettings, spawn: Spawn
) -> None:
    msgs = messages(12, 20)
    writer = spawn(
        *KUBENETMON, "writer", *_writer_argv(nats_settings, chdb_settings, "--workers", "3"), name="writer"
    )
    await publish(broker, msgs)
    await eventually(lambda: settled(broker))
    assert "running 1 writer process, not 3" in writer.log
    path = chdb_settings.dsn.removeprefix("chdb://")
    await eventually(lambda: live_endpoint(path) is not None)

    # the directory is held by the writer: sql goes through its read-only endpoint
    read = _sql(chdb_settings, SUMS)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [{"count()": 240, "sum(bytes)": total_bytes(msgs)}]
    refused = _sql(chdb_settings, "DROP TABLE network_flows_0")
    assert refused.returncode == 1 and "read-only" in refused.stderr.lower()

    writer.signal(signal.SIGTERM)
    assert await writer.wait() == 0
    assert live_endpoint(path) is None  # the owner withdrew its endpoint
    assert run_query(chdb_settings, SUMS).rows == [(240, total_bytes(msgs))]  # and released the directory


async def test_sigkill_after_insert_before_ack_changes_no_sums(
    broker: Broker, nats_settings: NatsSettings, chdb_settings: ClickHouseSettings, spawn: Spawn
) -> None:
    msgs = messages(10, 30)
    await publish(broker, msgs)
    argv = _writer_argv(nats_settings, chdb_settings, "--batch-rows", "100000", "--batch-age", "1s")
    crash = spawn(sys.executable, "-m", "tests.writer.crash_after_insert", *argv, name="crash")
    assert await crash.wait() == -signal.SIGKILL
    assert "inserted 300 rows; dying before the ack" in crash.log
    assert run_query(chdb_settings, SUMS).rows == [(300, total_bytes(msgs))]
    stats = await writer_stats(broker)
    assert stats.num_ack_pending + stats.num_pending == 10  # nothing was acknowledged

    writer = spawn(*KUBENETMON, "writer", *argv, name="writer")
    await eventually(lambda: settled(broker))  # redelivered after the ack wait, written again, acked
    assert "batch written rows=300 messages=10" in writer.log  # the redelivered messages, all of them
    writer.signal(signal.SIGTERM)
    assert await writer.wait() == 0
    assert run_query(chdb_settings, SUMS).rows == [(300, total_bytes(msgs))]
    raw = run_query(chdb_settings, "SELECT count() FROM network_flows_0").rows[0][0]
    assert raw in (300, 600)  # twice in the table until a merge, once through the exact view


async def test_sql_opens_an_unowned_directory_itself(
    chdb_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    migrate_cmd = [*KUBENETMON, "clickhouse", "migrate", "--clickhouse-dsn", chdb_settings.dsn]
    done = await asyncio.to_thread(subprocess.run, migrate_cmd, capture_output=True, timeout=60)
    assert done.returncode == 0
    out = _sql(
        chdb_settings, "SELECT name FROM system.tables WHERE database = 'kubenetmon' ORDER BY name", fmt="csv"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "name",
        "agent_reports",
        "agent_reports_exact",
        "kubenetmon_migrations",
        "kubenetmon_prices",
        "network_flows_0",
        "network_flows_0_cost",
        "network_flows_0_exact",
        "network_flows_0_node",
        "network_flows_0_node_cost",
        "network_flows_0_node_exact",
    ]


async def test_a_writer_waits_for_a_held_directory_then_owns_it(
    broker: Broker, nats_settings: NatsSettings, chdb_settings: ClickHouseSettings, spawn: Spawn
) -> None:
    msgs = messages(3, 10)
    await publish(broker, msgs)
    with Holder(chdb_settings.dsn.removeprefix("chdb://")) as holder:
        writer = spawn(*KUBENETMON, "writer", *_writer_argv(nats_settings, chdb_settings), name="writer")
        await eventually(lambda: "ClickHouse unavailable at start" in writer.log)
        assert (await writer_stats(broker)).num_pending == 3  # not ready: nothing fetched meanwhile
        holder.release()
        await eventually(lambda: settled(broker))
    writer.signal(signal.SIGTERM)
    assert await writer.wait() == 0
    assert run_query(chdb_settings, SUMS).rows == [(30, total_bytes(msgs))]
