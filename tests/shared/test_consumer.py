"""The consumer loop and ack policy against a real nats-server: ack, nak + redelivery, DLQ, max_deliver."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence

import nats
import pytest
from prometheus_client import REGISTRY

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared import consumer as c
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import DecodeError, PoisonError, TransientError
from tests.fixtures.nats import nats_settings_for
from tests.support import eventually

DEADLINE_S = 20.0


class Run:
    """A ``consume`` loop in a task, recording every delivery it handles."""

    def __init__(self, broker: Broker, decide: Callable[[Delivery], c.Outcome]) -> None:
        self.broker = broker
        self.decide = decide
        self.seen: list[tuple[bytes, int]] = []
        self.changed = asyncio.Condition()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def handler(self, deliveries: list[Delivery]) -> Sequence[c.Outcome]:
        outcomes = [self.decide(d) for d in deliveries]
        async with self.changed:
            self.seen += [(d.data, d.num_delivered) for d in deliveries]
            self.changed.notify_all()
        return outcomes

    def start(self) -> Run:
        self.task = asyncio.create_task(
            c.consume(
                self.broker,
                consumer="enricher",
                handler=self.handler,
                stop=self.stop,
                batch=10,
                fetch_timeout=0.5,
                stage="test",
            )
        )
        return self

    async def wait_for(self, predicate: Callable[[list[tuple[bytes, int]]], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S), self.changed:
            await self.changed.wait_for(lambda: predicate(self.seen))

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, DEADLINE_S)


@pytest.fixture
async def publish(broker: Broker) -> AsyncIterator[Callable[[bytes], asyncio.Future[object]]]:
    async def put(data: bytes) -> object:
        return await broker.publish(broker.raw_subject("node-1"), data, msg_id=data.decode())

    yield lambda data: asyncio.ensure_future(put(data))


def fetch_errors() -> float:
    return REGISTRY.get_sample_value("kubenetmon_fetch_errors_total", {"stage": "test"}) or 0.0


def settle_errors() -> float:
    return REGISTRY.get_sample_value("kubenetmon_settle_errors_total", {"stage": "test"}) or 0.0


async def dlq_messages(broker: Broker, count: int) -> list[Delivery]:
    source = await broker.ephemeral("dlq")
    got: list[Delivery] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < count:
            got += await source.fetch(count - len(got), 1.0)
    await source.close()
    return got


async def test_acked_messages_are_done(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    for i in range(5):
        await publish(f"m{i}".encode())
    run = Run(broker, lambda d: c.ACK).start()
    await run.wait_for(lambda seen: len(seen) == 5)
    await run.finish()
    info = await broker.consumer_info("enricher")
    assert (info.num_pending, info.num_ack_pending, info.ack_floor_stream_seq) == (0, 0, 5)
    assert sorted(run.seen) == [(f"m{i}".encode(), 1) for i in range(5)]


async def test_nak_then_redelivery(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    await publish(b"flaky")
    await publish(b"fine")
    run = Run(
        broker, lambda d: c.Retry("busy") if d.data == b"flaky" and d.num_delivered == 1 else c.ACK
    ).start()
    await run.wait_for(lambda seen: (b"flaky", 2) in seen)
    await run.finish()
    assert run.seen.count((b"fine", 1)) == 1
    assert [n for data, n in run.seen if data == b"flaky"] == [1, 2]
    info = await broker.consumer_info("enricher")
    assert (info.num_ack_pending, info.ack_floor_stream_seq) == (0, 2)


async def test_poison_goes_to_dlq_with_reason_and_is_not_redelivered(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    await publish(b"bad")
    await publish(b"good")
    decide: dict[bytes, c.Outcome] = {
        b"bad": c.Poison("schema", "field 'v' missing\nsecond line"),
        b"good": c.ACK,
    }
    run = Run(broker, lambda d: decide[d.data]).start()
    await run.wait_for(lambda seen: len(seen) == 2)
    [dead] = await dlq_messages(broker, 1)
    await run.finish()
    assert dead.data == b"bad"
    assert dead.subject == broker.dlq_subject("test")
    h = dead.headers
    assert h[c.H_REASON] == "schema"
    assert h[c.H_DETAIL] == "field 'v' missing second line"
    assert h[c.H_STAGE] == "test"
    assert h[c.H_ORIGINAL_SUBJECT] == broker.raw_subject("node-1")
    assert h[c.H_ORIGINAL_MSG_ID] == "bad"
    assert h[c.H_ORIGINAL_STREAM] == broker.stream_name("raw")
    assert (h[c.H_STREAM_SEQ], h[c.H_NUM_DELIVERED]) == ("1", "1")
    assert dead.msg_id == f"dlq/test/{broker.stream_name('raw')}/1"
    info = await broker.consumer_info("enricher")
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert sorted(run.seen) == [(b"bad", 1), (b"good", 1)]


async def test_max_deliver_sends_to_dlq(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    await publish(b"always-busy")
    max_deliver = broker.settings.max_deliver
    run = Run(broker, lambda d: c.Retry("busy", detail="db down")).start()
    await run.wait_for(lambda seen: len(seen) == max_deliver)
    [dead] = await dlq_messages(broker, 1)
    await run.finish()
    assert [n for _, n in run.seen] == list(range(1, max_deliver + 1))
    assert dead.headers[c.H_REASON] == "max_deliver"
    assert dead.headers[c.H_DETAIL] == f"busy after {max_deliver} deliveries: db down"
    assert dead.headers[c.H_NUM_DELIVERED] == str(max_deliver)
    assert (await broker.consumer_info("enricher")).num_ack_pending == 0


async def test_handler_exceptions_are_classified(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    await publish(b"undecodable")
    calls: list[int] = []

    def decide(d: Delivery) -> c.Outcome:
        calls.append(d.num_delivered)
        if d.num_delivered == 1:
            raise RuntimeError("bug")  # -> Retry("error"), logged
        raise DecodeError("malformed", "not msgpack", data=d.data)  # -> DLQ

    run = Run(broker, decide).start()
    [dead] = await dlq_messages(broker, 1)
    await run.finish()
    assert calls == [1, 2]
    assert dead.headers[c.H_REASON] == "malformed"


def test_classify() -> None:
    assert c.classify(DecodeError("version", "v=9")) == c.Poison("version", "v=9")
    assert c.classify(PoisonError("address", "bad ip")) == c.Poison("address", "bad ip")
    assert c.classify(TransientError("db down")) == c.Retry("transient", detail="db down")
    assert c.classify(ValueError("x")) == c.Retry("error", detail="ValueError('x')")


async def test_binding_is_retried_while_the_broker_is_away(
    make_nats_server: Callable[..., NatsServer],
) -> None:
    # a worker that starts while NATS is down (or its cluster elects the consumer's leader) keeps trying
    # to bind instead of ending; once the server is back it consumes what waited
    server = make_nats_server()
    settings = dataclasses.replace(nats_settings_for(server), publish_timeout_s=0.5)
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        for i in range(3):
            await broker.publish(broker.raw_subject("node-1"), f"m{i}".encode(), msg_id=f"m{i}")
        failed = fetch_errors()
        server.stop()
        run = Run(broker, lambda d: c.ACK).start()
        await eventually(lambda: fetch_errors() > failed)
        assert run.task is not None and not run.task.done()
        server.start()
        await run.wait_for(lambda seen: len(seen) == 3)
        await run.finish()
        assert sorted(run.seen) == [(f"m{i}".encode(), 1) for i in range(3)]


async def test_a_last_delivery_the_dlq_cannot_take_comes_back_and_is_then_dead_lettered(
    broker: Broker, publish: Callable[[bytes], asyncio.Future[object]]
) -> None:
    # The DLQ is gone when the last allowed delivery fails: it is nak'ed, and the server delivers it
    # again (it never gives up on its own), so once the DLQ is back the message lands there, unhandled.
    await publish(b"always-busy")
    max_deliver = broker.settings.max_deliver
    nc = await nats.connect(broker.settings.urls[0])
    try:
        await nc.jetstream().delete_stream(broker.stream_name("dlq"))
    finally:
        await nc.close()
    failed = settle_errors()
    run = Run(broker, lambda d: c.Retry("busy")).start()
    try:
        await run.wait_for(lambda seen: len(seen) == max_deliver)
        await eventually(lambda: settle_errors() > failed)  # the DLQ publish of the last one failed
        (await broker.ensure_topology()).raise_for_conflicts()  # the DLQ back
        [dead] = await dlq_messages(broker, 1)
    finally:
        await run.finish()
    assert [n for _, n in run.seen] == list(range(1, max_deliver + 1))  # never handled past the last
    assert dead.data == b"always-busy" and dead.headers[c.H_REASON] == "max_deliver"
    assert int(dead.headers[c.H_NUM_DELIVERED]) > max_deliver
    info = await broker.consumer_info("enricher")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_message_never_settled_max_deliver_times_goes_to_the_dlq_unhandled(
    nats_server: NatsServer,
) -> None:
    # Its workers were killed while holding it (no ack, no nak): the server delivers it again after each
    # ack wait, past --nats-max-deliver, and the next worker dead-letters it without handling it.
    settings = nats_settings_for(nats_server, ack_wait_s=1.0, backoff_s=(0.05,))
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        try:
            (await broker.ensure_topology()).raise_for_conflicts()
            await broker.publish(broker.raw_subject("node-1"), b"kills-its-worker", msg_id="k")
            source = await broker.pull("enricher")
            held: list[int] = []
            async with asyncio.timeout(DEADLINE_S):
                while len(held) < settings.max_deliver:  # each worker vanishes holding it
                    held += [d.num_delivered for d in await source.fetch(1, 1.0)]
            await source.close()
            await broker.publish(broker.raw_subject("node-1"), b"fine", msg_id="f")
            run = Run(broker, lambda d: c.ACK).start()
            try:
                [dead] = await dlq_messages(broker, 1)
                await run.wait_for(lambda seen: any(data == b"fine" for data, _ in seen))
            finally:
                await run.finish()
            assert held == list(range(1, settings.max_deliver + 1))
            assert b"kills-its-worker" not in {data for data, _ in run.seen}
            assert dead.data == b"kills-its-worker" and dead.headers[c.H_REASON] == "max_deliver"
            assert dead.headers[c.H_DETAIL] == f"not settled in {settings.max_deliver} deliveries"
            info = await broker.consumer_info("enricher")
            assert (info.num_pending, info.num_ack_pending) == (0, 0)
        finally:
            await broker.delete_topology()
