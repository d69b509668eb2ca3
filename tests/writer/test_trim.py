"""ENRICHED's trim: only near the limit, only what the writers already acknowledged, down to about half."""

from __future__ import annotations

import dataclasses

from kubenetmon.shared.broker import Broker, StreamStats
from kubenetmon.shared.errors import StoreFullError
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.trim import trim_below, trim_once
from tests.support.waiting import eventually

SMALL = 16 * 1024


def _stats(*, messages: int, nbytes: int, first: int = 1, max_bytes: int = 1000) -> StreamStats:
    return StreamStats("E", messages, nbytes, first, first + messages - 1, 1, max_bytes=max_bytes)


def test_nothing_goes_below_the_high_mark_or_without_a_limit() -> None:
    assert trim_below(_stats(messages=74, nbytes=749), ack_floor=10_000) is None
    assert trim_below(_stats(messages=100, nbytes=10_000, max_bytes=-1), ack_floor=10_000) is None
    assert trim_below(_stats(messages=0, nbytes=0), ack_floor=10_000) is None


def test_the_oldest_go_down_to_about_half_but_never_one_not_acknowledged() -> None:
    full = _stats(messages=100, nbytes=1000, first=501)
    assert trim_below(full, ack_floor=10_000) == 551  # 50 of 100 messages of 10 bytes
    assert trim_below(full, ack_floor=520) == 521  # the writers stored up to #520 only
    assert trim_below(full, ack_floor=500) is None  # none of them yet
    assert trim_below(full, ack_floor=0) is None


def test_a_stream_too_small_for_the_largest_message_is_trimmed_to_leave_room_for_one() -> None:
    half = _stats(messages=50, nbytes=500, first=1)  # 500 bytes free, a message may take 600
    assert trim_below(half, ack_floor=10_000) is None
    assert trim_below(half, ack_floor=10_000, reserve=600) == 11  # 400 bytes left: 600 free
    assert trim_below(half, ack_floor=10_000, reserve=2000) == 51  # never enough: every stored one goes
    assert trim_below(half, ack_floor=20, reserve=2000) == 21


async def test_trim_frees_a_full_enriched_stream_of_what_the_writer_acknowledged(
    nats_settings: NatsSettings,
) -> None:
    settings = dataclasses.replace(nats_settings, enriched_max_bytes=SMALL)
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        subject = broker.enriched_subject("n1")
        sent = 0
        while True:
            try:
                await broker.publish(subject, b"x" * 1000, msg_id=f"e/{sent}")
            except StoreFullError:
                break
            sent += 1
        assert await trim_once(broker) == 0  # nothing acknowledged: nothing goes
        source = await broker.pull("writer")
        taken = await source.fetch(4, 1.0)
        for delivery in taken:
            await delivery.ack()

        async def acknowledged() -> bool:
            return (await broker.consumer_info("writer")).ack_floor_stream_seq == 4

        await eventually(acknowledged)
        assert await trim_once(broker) == 5  # the four acknowledged went, the rest stays
        stats = await broker.stream_info("enriched")
        assert (stats.first_seq, stats.messages) == (5, sent - 4)
        await broker.publish(subject, b"x" * 1000, msg_id="after")  # room again
        assert not broker.capacity.full
