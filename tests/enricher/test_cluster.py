"""The enricher on a three-node JetStream cluster: the ENRICHED stream's leader is SIGKILLed while the
enricher holds its first batch, so its publishes meet the election; they are sent again under the same
derived message ids (by the broker while there is no leader, or after a nak and redelivery), and
ENRICHED ends with every id exactly once, nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import REGISTRY

from kubenetmon.enricher.worker import STAGE, Enricher
from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import Outcome, consume
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import TransientError
from tests.fixtures.nats_cluster import NatsCluster, cluster_settings, settling, stored_count, stored_ids
from tests.support import eventually
from tests.support.enricher import DEADLINE_S, make_labeler, traffic

COUNT = 40


def _retries() -> float:
    """ENRICHED publishes sent again under their id: by the broker (no leader yet), or after a nak."""
    samples = (
        ("kubenetmon_nats_publish_retries_total", {"stream": "enriched"}),
        ("kubenetmon_messages_settled_total", {"stage": STAGE, "outcome": "nak"}),
    )
    return sum(REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in samples)


async def test_enriched_publishes_cut_by_the_leaders_death_are_retried_under_their_ids(
    make_nats_cluster: Callable[..., NatsCluster], inventory_file: Path
) -> None:
    cluster = make_nats_cluster()
    settings = cluster_settings(cluster)
    msgs = [traffic(1, 6, seq=i)[0] for i in range(COUNT)]
    async with await Broker.connect(settings, name="test-enricher", wait_s=10.0) as broker:
        # placing R3 streams and consumers on a fresh cluster can outlast one 5 s answer on a busy machine
        (await settling(broker.ensure_topology)).raise_for_conflicts()
        for msg in msgs:
            await broker.publish(broker.raw_subject(msg.node), schema.encode_raw(msg), msg_id=msg.msg_id)
        retries = _retries()
        # The first batch is held until the leader is dead: binding and fetching happen before the kill
        # (a bind during the election could outlast it), publishing right after, within the election.
        fetched, killed = asyncio.Event(), asyncio.Event()
        enricher = Enricher(make_labeler(inventory_file), broker=broker, max_rows=1000)

        async def handle(deliveries: list[Delivery]) -> Sequence[Outcome]:
            fetched.set()
            await killed.wait()
            return await enricher.handle(deliveries)

        stop = asyncio.Event()
        work = consume(
            broker,
            consumer=STAGE,
            handler=handle,
            stop=stop,
            batch=8,
            fetch_timeout=0.2,
            stage=STAGE,
        )
        run = asyncio.create_task(work)
        await asyncio.wait_for(fetched.wait(), DEADLINE_S)
        victim = await asyncio.to_thread(cluster.kill_leader, settings, "enriched")
        killed.set()

        last: list[object] = []

        async def settled() -> bool:
            try:
                info = await broker.consumer_info(STAGE)
            except TransientError as exc:
                last[:] = [exc]
                return False
            last[:] = [info]
            return info.num_pending == 0 and info.num_ack_pending == 0

        try:
            await eventually(settled, within=60)
        except AssertionError:
            raise AssertionError(f"not settled: {last}, enricher task {run}") from None
        stop.set()
        await asyncio.wait_for(run, DEADLINE_S)
        retried = _retries() - retries
        await asyncio.to_thread(cluster.start)  # the victim back and caught up: the cluster whole again
        ids = await stored_ids(broker, "enriched")
        dead = await stored_count(broker, "dlq")
    print(f"{COUNT} RAW messages; ENRICHED leader {victim.name} killed; publishes retried {retried:g}")
    assert set(ids) == {schema.enriched_msg_id(m.msg_id) for m in msgs}
    assert max(ids.values()) == 1
    assert dead == 0
    assert retried > 0  # publishes did meet the election, and were sent again
