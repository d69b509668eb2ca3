"""A writer that cannot reach ClickHouse says so in its own line, without urllib3's retry chatter."""

from __future__ import annotations

from collections.abc import Callable

from kubenetmon.shared.settings import NatsSettings
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.http import closed_port

Spawn = Callable[..., Process]


async def test_an_unreachable_clickhouse_is_the_writers_own_line(
    nats_settings: NatsSettings, spawn: Spawn
) -> None:
    with closed_port() as port:
        writer = spawn(
            *KUBENETMON, "writer", *flags(nats_settings), "--clickhouse-dsn", f"http://127.0.0.1:{port}",
            "--retry-min", "100ms", "--retry-max", "200ms", "--http-port", "-1", "--log-format", "text",
            name="writer",
        )  # fmt: skip
        await eventually(lambda: "ClickHouse unavailable at start (attempt 10)" in writer.log, within=60)
    assert "ClickHouse unavailable at start (attempt 1)" in writer.log
    assert "Retrying" not in writer.log and "urllib3" not in writer.log, writer.log
