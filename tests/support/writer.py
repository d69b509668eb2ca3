"""The writer's tests: publish ENRICHED, a ``Writer`` running in a task (``Running``), the writer's consumer
settled, the DLQ read back, a metric of this process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import REGISTRY

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_REASON
from kubenetmon.shared.deliveries import ConsumerStats, Delivery
from kubenetmon.shared.schema import EnrichedMessage, encode_enriched
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.worker import Writer

DEADLINE_S = 30.0


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
