"""Connect-and-ensure against a real nats-server: ensuring, checking only, conflicts, retrying until stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import free_port
from kubenetmon.shared.broker import connect_ready, connect_ready_or_stop
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.nats import nats_settings_for
from tests.fixtures.nats_cluster import NatsCluster, cluster_settings
from tests.support.waiting import eventually


async def test_ensure_creates_the_topology(nats_settings: NatsSettings) -> None:
    async with await connect_ready(nats_settings, name="t", wait_s=5.0) as broker:
        assert (await broker.stream_info("raw")).messages == 0
        assert (await broker.consumer_info("writer")).num_pending == 0


async def test_check_only_never_creates(nats_settings: NatsSettings) -> None:
    with pytest.raises(TransientError, match="RAW"):
        await connect_ready(nats_settings, name="t", wait_s=5.0, ensure=False, streams=("raw",))
    async with await connect_ready(nats_settings, name="t", wait_s=5.0, ensure=False) as broker:
        with pytest.raises(TransientError):
            await broker.stream_info("raw")
    async with await connect_ready(nats_settings, name="t", wait_s=5.0):
        pass
    async with await connect_ready(
        nats_settings, name="t", wait_s=5.0, ensure=False, streams=("raw", "dlq")
    ) as broker:
        assert broker.connected


async def test_a_conflict_raises_or_is_logged(
    nats_settings: NatsSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with await connect_ready(nats_settings, name="t", wait_s=5.0):
        pass
    in_memory = dataclasses.replace(nats_settings, storage="memory")
    with pytest.raises(ConfigError, match="cannot be reconciled"):
        await connect_ready(in_memory, name="t", wait_s=5.0)
    mine = logging.getLogger("tests.ready")
    caplog.set_level(logging.WARNING, logger=mine.name)
    async with await connect_ready(in_memory, name="t", wait_s=5.0, strict=False, log=mine) as broker:
        assert broker.connected
    lines = [r.getMessage() for r in caplog.records if r.name == mine.name]
    assert len(lines) == 4 and all(line.startswith("JetStream topology conflict: ") for line in lines)


async def test_unreachable_is_transient_once_or_retried_until_stop() -> None:
    settings = nats_settings_for(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="cannot connect"):
        await connect_ready(settings, name="t", wait_s=0.3)

    stop = asyncio.Event()
    attempts: list[str] = []

    class StopAfterTwo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            attempts.append(record.getMessage())
            if len(attempts) == 2:
                stop.set()

    mine = logging.getLogger("tests.ready.retry")
    handler = StopAfterTwo(logging.WARNING)
    mine.addHandler(handler)
    try:
        broker = await connect_ready_or_stop(settings, name="t", stop=stop, wait_s=0.2, retry_s=0.0, log=mine)
    finally:
        mine.removeHandler(handler)
    assert broker is None
    assert [a.split(":")[0] for a in attempts] == [
        "NATS unavailable (attempt 1)",
        "NATS unavailable (attempt 10)",
    ]


async def test_retrying_connects_once_the_server_answers(nats_settings: NatsSettings) -> None:
    stop = asyncio.Event()
    broker = await connect_ready_or_stop(nats_settings, name="t", stop=stop, wait_s=5.0, retry_s=0.1)
    assert broker is not None
    async with broker:
        assert (await broker.stream_info("enriched")).messages == 0
    stop.set()
    assert await connect_ready_or_stop(nats_settings, name="t", stop=stop, wait_s=5.0, retry_s=0.1) is None


async def test_a_service_starting_with_its_cluster_waits_for_a_jetstream_leader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One member of three answers, so the connection is made, but JetStream has no leader until a quorum
    runs: ensuring the topology is asked again (logged) instead of failing the service's start."""
    cluster = NatsCluster(tmp_path / "cluster")
    settings = cluster_settings(cluster)
    mine = logging.getLogger("tests.ready.leader")
    caplog.set_level(logging.WARNING, logger=mine.name)
    stop = asyncio.Event()
    try:
        cluster.servers[0].launch()
        starting = asyncio.create_task(
            connect_ready_or_stop(settings, name="t", stop=stop, wait_s=5.0, retry_s=0.2, log=mine)
        )

        def not_ready() -> bool:
            return any(r.getMessage().startswith("JetStream not ready (attempt 1)") for r in caplog.records)

        await eventually(lambda: not_ready() or starting.done(), within=60)
        assert not starting.done()
        await asyncio.to_thread(cluster.start)  # the other members: a quorum, a leader
        broker = await asyncio.wait_for(starting, 120)
        assert broker is not None
        async with broker:
            assert (await broker.stream_info("raw")).replicas == 3
    finally:
        stop.set()
        cluster.stop()
