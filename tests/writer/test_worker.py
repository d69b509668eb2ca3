"""The write loop against a real nats-server and chDB: exact rows, idempotency, poison, outages, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.schema import COLUMN_NAMES, EnrichedMessage, encode_enriched
from kubenetmon.writer.settings import ClickHouseSettings, WriterSettings
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.worker import Writer
from tests.support import eventually
from tests.support.holder import Holder
from tests.support.messages import message, messages, row, total_bytes
from tests.support.writer import Running, dlq, metric, publish, reasons, settled, writer_stats

Query = Callable[[str], list[tuple[Any, ...]]]
Start = Callable[..., Awaitable[Running]]


def _by_direction(msgs: list[EnrichedMessage]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for msg in msgs:
        cols = dict(zip(msg.columns, msg.data, strict=True))
        for direction, nbytes in zip(cols["direction"], cols["bytes"], strict=True):
            count, total = out.get(direction, (0, 0))
            out[direction] = (count + 1, total + nbytes)
    return out


def _sums(query: Query, relation: str = "{x}") -> dict[str, tuple[int, int]]:
    rows = query(f"SELECT toString(direction), count(), sum(bytes) FROM {relation} GROUP BY direction")
    return {d: (int(c), int(s)) for d, c, s in rows}


async def test_known_messages_become_exactly_those_rows(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query
) -> None:
    msgs = messages(6, 40) + messages(2, 25, prefix="node-a/boot/1/1", direction="in")
    partial = [c for c in COLUMN_NAMES if c not in ("localWorkload", "remoteService", "crossZone")]
    msgs.append(
        message(
            "node-b/boot/2/0/0",
            [row("node-b/boot/2/0/0", i, localWorkload="x") for i in range(3)],
            columns=partial,
        )
    )
    written_before = metric("kubenetmon_writer_rows_written_total")
    await publish(broker, msgs)
    run = await start_writer()
    await eventually(lambda: settled(broker))
    await run.stop()

    assert _sums(query) == _by_direction(msgs) == _sums(query, "{t}")
    assert query(
        "SELECT count(), uniqExact(flowId), sum(localWorkload = ''), "
        "countIf(sourceId = 'node-b/boot/2/0/0') FROM {x}"
    ) == [(293, 293, 293, 3)]
    one = msgs[0]
    cols = dict(zip(one.columns, one.data, strict=True))
    got = query(
        "SELECT flowId, bytes, localPod, remotePort FROM {x} "
        f"WHERE sourceId = '{one.source}' ORDER BY bytes"
    )
    assert got == sorted(
        zip(cols["flowId"], cols["bytes"], cols["localPod"], cols["remotePort"], strict=True),
        key=lambda r: r[1],
    )
    assert metric("kubenetmon_writer_rows_written_total") - written_before == 293
    assert run.writer.held == {} and metric("kubenetmon_writer_rows_pending") == 0


async def test_duplicates_and_replays_replace_rows(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query
) -> None:
    msgs = messages(4, 30)
    expected = _by_direction(msgs)
    # delivered twice (distinct stream messages, as after a crash before the ack) ...
    await publish(broker, msgs, msg_ids=[f"first-{m.source}" for m in msgs])
    await publish(broker, msgs, msg_ids=[f"again-{m.source}" for m in msgs])
    # ... and re-enriched by a replay that changes a label and carries a newer version
    replayed = [
        message(m.source, [row(m.source, i, localApp="fixed-app") for i in range(30)], enriched_at=2)
        for m in msgs
    ]
    await publish(broker, replayed, msg_ids=[f"replay-{m.source}" for m in msgs])
    run = await start_writer()
    await eventually(lambda: settled(broker))
    await run.stop()

    assert _sums(query) == expected
    assert query("SELECT DISTINCT localApp, enrichedAt FROM {x}") == [("fixed-app", 2)]
    clickhouse.command(f"OPTIMIZE TABLE {clickhouse.database}.{clickhouse.table} FINAL")
    assert _sums(query, "{t}") == expected  # merges converge on the same rows


async def test_a_poison_message_goes_to_the_dlq_and_its_neighbours_are_written(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query
) -> None:
    good = messages(8, 10)
    # ClickHouse refuses these two at insert time (the decoder does not know the direction enum) ...
    bad_enum = message("bad/enum/1/0/0", [row("bad/enum/1/0/0", 0, direction="sideways")])
    bad_empty = message("bad/empty/1/0/0", [row("bad/empty/1/0/0", i, direction="") for i in range(2)])
    # ... and the decoder this one (a port that no UInt16 holds)
    bad_port = message("bad/port/1/0/0", [row("bad/port/1/0/0", 0, localPort=70000)])
    batch = [*good[:3], bad_enum, *good[3:6], bad_empty, bad_port, *good[6:]]
    rejected_before = metric("kubenetmon_writer_rejected_messages_total")
    await publish(broker, [*batch, b"\x93not msgpack"], msg_ids=[*(m.msg_id for m in batch), "garbage"])
    run = await start_writer(batch_rows=10_000, batch_age_s=1.0)
    await eventually(lambda: settled(broker))
    await run.stop()

    assert _sums(query) == _by_direction(good)
    assert reasons(await dlq(broker, 4)) == ["invalid_batch", "invalid_batch", "malformed", "schema"]
    assert metric("kubenetmon_writer_rejected_messages_total") - rejected_before == 2
    assert metric("kubenetmon_writer_insert_retries_total", reason="split") >= 2


async def test_clickhouse_unavailable_then_back_loses_and_doubles_nothing(
    broker: Broker, clickhouse: Sink, chdb_settings: ClickHouseSettings, start_writer: Start, query: Query
) -> None:
    clickhouse.close()  # the test process lets go of the directory so another process can hold it
    msgs = messages(40, 10)
    await publish(broker, msgs)
    retries = metric("kubenetmon_writer_insert_retries_total", reason="unavailable")
    with Holder(Path(chdb_settings.dsn.removeprefix("chdb://"))) as holder:
        run = await start_writer(
            batch_rows=50, batch_age_s=0.1, fetch_size=3, retry_min_s=0.1, retry_max_s=0.4
        )
        # down for longer than the ack wait (3 s in tests): keepalives must stop any redelivery
        await eventually(
            lambda: metric("kubenetmon_writer_insert_retries_total", reason="unavailable") - retries >= 10
        )
        stats = await writer_stats(broker)
        assert len(run.writer.held) <= 50 // 10 + 3  # one batch plus one fetch: backpressure, bounded memory
        assert stats.num_ack_pending == len(run.writer.held)  # held, not acknowledged
        assert stats.num_pending >= 40 - len(run.writer.held)  # the rest stays in the stream
        assert stats.num_redelivered == 0
        holder.release()
        await eventually(lambda: settled(broker))
    await run.stop()

    assert _sums(query) == _by_direction(msgs) == {"out": (400, total_bytes(msgs))}
    assert (await writer_stats(broker)).num_redelivered == 0


async def test_stop_flushes_the_open_batch(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query
) -> None:
    msgs = messages(5, 7)
    await publish(broker, msgs)
    run = await start_writer(batch_rows=1_000_000, batch_age_s=3600.0)
    await eventually(lambda: run.writer.batcher.pending_rows == 35)
    assert (await writer_stats(broker)).num_ack_pending == 5
    await run.stop()
    assert _sums(query) == _by_direction(msgs)
    await eventually(lambda: settled(broker))


async def test_stop_while_clickhouse_is_down_hands_messages_back(
    broker: Broker, clickhouse: Sink, chdb_settings: ClickHouseSettings, start_writer: Start, query: Query
) -> None:
    clickhouse.close()
    msgs = messages(6, 5)
    await publish(broker, msgs)
    with Holder(Path(chdb_settings.dsn.removeprefix("chdb://"))):
        run = await start_writer(batch_age_s=0.1, retry_min_s=0.1, retry_max_s=0.2, drain_s=0.5)
        await eventually(lambda: len(run.writer.held) == 6)
        await run.stop()  # cannot flush: nak'ed at the drain deadline, never acked, never dropped
        assert run.writer.held == {}
        stats = await writer_stats(broker)
        assert stats.num_ack_pending + stats.num_pending == 6
    await start_writer()
    await eventually(lambda: settled(broker))
    assert _sums(query) == _by_direction(msgs)


class _Recorder:
    """Settles nothing: ``fetch_count`` only looks at the open batch."""

    async def ack(self) -> None: ...
    async def nak(self, delay: float | None) -> None: ...
    async def in_progress(self) -> None: ...
    async def term(self) -> None: ...


async def test_fetches_only_what_the_open_batch_has_room_for(broker: Broker, clickhouse: Sink) -> None:
    settings = WriterSettings(batch_rows=1000, fetch_size=100)
    writer = Writer(
        source=await broker.pull("writer"),
        broker=broker,
        sink=clickhouse,
        settings=settings,
        keepalive_s=1.0,
        drain_s=1.0,
    )
    assert writer.fetch_count() == 100
    for i, msg in enumerate(messages(4, 200)):
        delivery = Delivery(
            _Recorder(),
            data=encode_enriched(msg),
            subject="s",
            headers={},
            msg_id=msg.msg_id,
            num_delivered=1,
            stream="S",
            consumer="writer",
            stream_seq=i + 1,
            timestamp=0.0,
            pending=0,
        )
        await writer.admit(delivery)
    assert writer.batcher.pending_rows == 800 and writer.fetch_count() <= 3


async def test_a_message_past_max_deliver_goes_to_the_dlq_unwritten(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query
) -> None:
    # Delivered max_deliver times already and never settled by a writer (nak'ed at once here: writers
    # killed while holding it leave it the same way, one ack wait later): the server delivers it once
    # more, and the writer dead-letters it without writing it; its neighbour is written.
    tired, fine = messages(2, 5)
    await publish(broker, [tired])
    source = await broker.pull("writer")
    seen: list[int] = []
    async with asyncio.timeout(20):
        while len(seen) < broker.settings.max_deliver:
            for delivery in await source.fetch(1, 1.0):
                seen.append(delivery.num_delivered)
                await delivery.nak(0)
    await source.close()
    await publish(broker, [fine])
    run = await start_writer()
    await eventually(lambda: settled(broker))
    await run.stop()

    [dead] = await dlq(broker, 1)
    assert seen == list(range(1, broker.settings.max_deliver + 1))
    assert reasons([dead]) == ["max_deliver"] and dead.headers["Kubenetmon-Original-Msg-Id"] == tired.msg_id
    assert _sums(query) == _by_direction([fine])
