"""A full stream against a real nats-server: refused, said once, held, and taken again once it has room.

Every stream has a ``max_bytes`` and ``discard: new`` (``topology``): a full stream refuses a publish
instead of deleting its oldest messages. The broker turns the refusal into ``StoreFullError``, the gauge
``kubenetmon_nats_store_full{stream}`` and one log line; the consumer loop holds a batch whose results a
full stream refused (no delivery counted, nothing dead-lettered) and finishes it once the stream has room;
``nats init`` changes the limits in place, without losing a message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import nats
import nats.js.errors
import pytest
from nats.js import api
from prometheus_client import REGISTRY

from kubenetmon.shared.broker import Broker, Delivery
from kubenetmon.shared.broker.capacity import Capacity, is_store_full
from kubenetmon.shared.consumer import ACK, Outcome, Poison, consume
from kubenetmon.shared.errors import StoreFullError
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.shared.topology import stream_specs
from tests.support.waiting import eventually

SMALL = 16 * 1024
PAYLOAD = b"x" * 1000


def _full(kind: str) -> float:
    return REGISTRY.get_sample_value("kubenetmon_nats_store_full", {"stream": kind}) or 0.0


async def _fill(broker: Broker, kind: str, node: str = "n1") -> int:
    """Publish 1000-byte messages to stream ``kind`` until it refuses one; how many it took."""
    subject = broker.raw_subject(node) if kind == "raw" else broker.enriched_subject(node)
    for i in range(10_000):
        try:
            await broker.publish(subject, PAYLOAD, msg_id=f"{kind}/{node}/{i}")
        except StoreFullError as exc:
            assert exc.stream == kind
            return i
    raise AssertionError(f"{kind} never filled up")


def test_every_stream_has_a_byte_limit_and_refuses_new_messages_when_full() -> None:
    for spec in stream_specs(NatsSettings()):
        assert spec.max_bytes > 0 and spec.discard == "new", spec
    assert sum(spec.max_bytes for spec in stream_specs(NatsSettings())) < 8 * 10**9  # max_file_store 8GB


async def test_a_full_stream_refuses_says_so_once_and_takes_again_once_its_limit_is_raised(
    nats_settings: NatsSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(nats_settings, raw_max_bytes=SMALL)
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        heard: list[bool] = []
        broker.capacity.listen(heard.append)
        with caplog.at_level(logging.INFO, logger="kubenetmon.shared.broker.capacity"):
            taken = await _fill(broker, "raw")
            for i in range(5):  # refused again and again: one log line, one transition
                with pytest.raises(StoreFullError, match="maximum bytes exceeded"):
                    await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id=f"again/{i}")
            assert heard == [True] and _full("raw") == 1.0
            assert [r.levelname for r in caplog.records if "store full" in r.message] == ["ERROR"]
            stats = await broker.stream_info("raw")
            assert stats.messages == taken and stats.bytes <= SMALL and stats.max_bytes == SMALL

            bigger = dataclasses.replace(settings, raw_max_bytes=4 * SMALL)
            async with await Broker.connect(bigger, name="admin", wait_s=5.0) as admin:
                report = await admin.ensure_topology()
            assert [c.action for c in report.changes if c.name.endswith("_RAW")] == ["updated"]
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id="after")
            assert heard == [True, False] and _full("raw") == 0.0
            assert (await broker.stream_info("raw")).messages == taken + 1  # none lost on the update
            assert any("takes new messages again" in r.message for r in caplog.records)


async def test_old_topology_is_reconciled_in_place_to_limits_and_discard_new(
    nats_settings: NatsSettings,
) -> None:
    unlimited = dataclasses.replace(
        nats_settings, raw_max_bytes=-1, enriched_max_bytes=-1, dlq_max_bytes=-1, meta_max_bytes=-1
    )
    async with await Broker.connect(unlimited, name="old", wait_s=5.0) as old:
        (await old.ensure_topology()).raise_for_conflicts()
        for i in range(40):
            await old.publish(old.raw_subject("n1"), PAYLOAD, msg_id=f"old/{i}")
    raw = stream_specs(nats_settings)[0].name
    nc = await nats.connect(nats_settings.urls[0])  # RAW as an older release made it: discard old
    try:
        js = nc.jetstream()
        config = (await js.stream_info(raw)).config
        config.discard = api.DiscardPolicy.OLD
        await js.update_stream(config)
    finally:
        await nc.close()
    # a limit below what RAW holds already: discard new keeps every message, it only refuses new ones
    limited = dataclasses.replace(nats_settings, raw_max_bytes=SMALL)
    async with await Broker.connect(limited, name="new", wait_s=5.0) as broker:
        report = await broker.ensure_topology()
        report.raise_for_conflicts()
        change = next(c for c in report.changes if c.name == raw)
        assert change.action == "updated"
        assert "discard: 'old' -> 'new'" in change.details and "max_bytes: -1 -> 16384" in change.details
        stats = await broker.stream_info("raw")
        assert stats.messages == 40 and stats.max_bytes == SMALL
        with pytest.raises(StoreFullError):
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id="refused")
        assert not (await broker.ensure_topology()).changed


async def test_consume_holds_a_batch_whose_results_a_full_stream_refused_and_finishes_it_with_room(
    nats_settings: NatsSettings,
) -> None:
    settings = dataclasses.replace(nats_settings, enriched_max_bytes=SMALL, max_deliver=2, backoff_s=(0.05,))
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        await _fill(broker, "enriched")
        for i in range(3):
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id=f"raw/{i}")
        handled: list[tuple[int, int]] = []

        async def handler(deliveries: list[Delivery]) -> list[Outcome]:
            for d in deliveries:
                handled.append((d.stream_seq, d.num_delivered))
                await broker.publish(broker.enriched_subject("n1"), PAYLOAD, msg_id=f"out/{d.stream_seq}")
            return [ACK] * len(deliveries)

        stop = asyncio.Event()
        task = asyncio.create_task(
            consume(
                broker,
                consumer="enricher",
                handler=handler,
                stop=stop,
                batch=10,
                fetch_timeout=0.5,
                stage="t",
            )
        )
        await eventually(lambda: len(handled) >= 6)  # the held batch, handled again
        assert broker.capacity.full == {"enriched": "maximum bytes exceeded"}
        seq = (await broker.stream_info("enriched")).last_seq
        await broker.purge_below("enriched", seq + 1)  # room again (what the writers' trim does)
        await eventually(lambda: not broker.capacity.full)  # ENRICHED took the results

        async def acknowledged() -> bool:
            info = await broker.consumer_info("enricher")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(acknowledged)
        stop.set()
        await task
        # held in progress: never redelivered (one delivery each), never dead-lettered past max_deliver
        assert {n for _, n in handled} == {1}
        assert (await broker.stream_info("dlq")).messages == 0
        assert (await broker.stream_info("enriched")).messages == 3


def test_a_stream_at_the_edge_of_its_limit_is_logged_once_a_minute_and_followed_at_every_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    capacity = Capacity(clock=lambda: now[0])
    heard: list[bool] = []
    capacity.listen(heard.append)
    full = nats.js.errors.ServiceUnavailableError(503, "maximum bytes exceeded", 10077)
    with caplog.at_level(logging.INFO, logger="kubenetmon.shared.broker.capacity"):
        for _ in range(10):  # refused, taken, refused...: within a minute
            capacity.refused("enriched", full, subject="k.enriched.n1")
            capacity.accepted("enriched")
            now[0] += 5.0
        now[0] += 60.0
        capacity.refused("enriched", full, subject="k.enriched.n1")
    assert heard == [True, False] * 10 + [True]
    lines = [r.message.split(":")[0] for r in caplog.records]
    assert lines == ["store full", "stream ENRICHED takes new messages again", "store full"]


@pytest.mark.parametrize(
    ("err_code", "description", "full"),
    [
        (10077, "maximum bytes exceeded", True),
        (10077, "maximum messages exceeded", True),
        (10023, "insufficient resources", True),
        (10077, "some other store failure", False),
        (10071, "wrong last sequence: 4", False),
        (10057, "maximum bytes exceeded", False),
    ],
)
def test_only_a_full_store_is_store_full(err_code: int, description: str, full: bool) -> None:
    assert is_store_full(nats.js.errors.APIError(503, description, err_code)) is full
    assert not is_store_full(TimeoutError())


async def test_a_poison_message_waits_for_room_in_a_full_dlq_and_is_never_dropped(
    nats_settings: NatsSettings,
) -> None:
    settings = dataclasses.replace(nats_settings, dlq_max_bytes=SMALL, max_deliver=2, backoff_s=(0.05,))
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        for i in range(100):
            try:
                await broker.publish(broker.dlq_subject("other"), PAYLOAD, msg_id=f"old/{i}")
            except StoreFullError:
                break
        await broker.publish(broker.raw_subject("n1"), b"not msgpack", msg_id="poison")

        async def handler(deliveries: list[Delivery]) -> list[Outcome]:
            return [Poison("malformed", "test")] * len(deliveries)

        stop = asyncio.Event()
        task = asyncio.create_task(
            consume(
                broker, consumer="enricher", handler=handler, stop=stop, batch=5, fetch_timeout=0.3, stage="t"
            )
        )

        async def redelivered() -> bool:
            return (await broker.consumer_info("enricher")).num_redelivered > 0

        await eventually(redelivered)  # nak'ed, not termed: the DLQ refused it
        assert broker.capacity.full == {"dlq": "maximum bytes exceeded"}
        dlq = await broker.stream_info("dlq")
        await broker.purge_below("dlq", dlq.last_seq + 1)  # room (re-driven, aged out)

        async def dead_lettered() -> bool:
            info = await broker.consumer_info("enricher")
            return info.num_pending == 0 and info.num_ack_pending == 0 and not broker.capacity.full

        await eventually(dead_lettered)
        stop.set()
        await task
        assert (await broker.stream_info("dlq")).messages == 1
