"""Reading a stream range for a replay: in order, once, bounded by the last sequence at start, and
through a NATS restart that loses the replay's in-memory consumer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.replay.scan import Range, scan
from tests.fixtures.nats import nats_settings_for


async def _publish(broker: Broker, first: int, count: int) -> None:
    for i in range(first, first + count):
        await broker.publish(broker.raw_subject("n1"), str(i).encode(), msg_id=f"m{i}")


async def test_a_scan_reads_each_message_once_and_survives_a_nats_restart(
    make_nats_server: Callable[..., NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kubenetmon.shared.replay.scan")
    server = make_nats_server()
    settings = nats_settings_for(server)
    async with await Broker.connect(settings, name="scan", wait_s=5) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        await _publish(broker, 0, 120)
        seen: list[int] = []
        totals: list[int] = []
        batches = scan(broker, Range("raw"), stop=asyncio.Event(), batch=10, on_total=totals.append)
        async for batch in batches:
            seen += [int(d.data) for d in batch]
            if len(seen) == 30:
                await asyncio.to_thread(server.restart)  # the replay's consumer lives in memory: gone
            if len(seen) == 60:
                await _publish(broker, 120, 5)  # arrives after the start: not part of this replay
        assert totals == [120]
        assert seen == list(range(120))
        assert "replay fetch failed" in caplog.text  # the consumer was lost and made again


async def test_a_scan_from_a_time_after_everything_reads_nothing(broker: Broker) -> None:
    await _publish(broker, 0, 3)
    got = [b async for b in scan(broker, Range("raw", start_time=4_000_000_000.0), stop=asyncio.Event())]
    assert got == []
