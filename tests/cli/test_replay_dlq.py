"""``replay dlq`` against a real nats-server, the real enricher handler and chDB: a RAW message dead-lettered
while the ENRICHED stream was missing is re-driven after the fix and lands in ClickHouse exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import (
    H_OMITTED_BYTES,
    H_ORIGINAL_STREAM,
    H_ORIGINAL_SUBJECT,
    H_REASON,
    H_STAGE,
    H_STREAM_SEQ,
    consume,
)
from kubenetmon.shared.errors import PoisonError
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.sink import Sink
from tests.support import Process, eventually, flags
from tests.support.replay import (
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    interval_messages,
    publish_raw,
    read_stream,
    run_cli,
    settled,
    write_inventory,
    write_until_settled,
)

SETTINGS = LabelSettings(cloud="aws", region="us-west-2")


async def _delete_stream(settings: NatsSettings, name: str) -> None:
    """An operator's mistake, made with the plain client."""
    nc = await nats.connect(settings.urls[0])
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def test_a_dead_lettered_message_redriven_after_the_fix_lands_once(
    broker: Broker,
    nats_settings: NatsSettings,
    clickhouse: Sink,
    tmp_path: Path,
    spawn: Callable[..., Process],
) -> None:
    base = base_time()
    inv = write_inventory(tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES])
    index = Index()
    inventory.load(index, inv)
    ranges = sources.load_table(sources.RangeSettings(), private=SETTINGS.private)
    enricher = Enricher(Labeler(SETTINGS, index=index, ranges=ranges), broker=broker, max_rows=1000)
    stop = asyncio.Event()
    live = asyncio.create_task(
        consume(
            broker,
            consumer="enricher",
            handler=enricher.handle,
            stop=stop,
            batch=10,
            fetch_timeout=0.2,
            stage="enricher",
        )
    )
    try:
        await _delete_stream(nats_settings, broker.stream_name("enriched"))
        [msg] = interval_messages(base, 1)
        await publish_raw(broker, [msg])
        await broker.publish(broker.raw_subject("n1"), b"\xc1 not msgpack", msg_id="garbage/1")

        async def dead() -> bool:
            return (await broker.stream_info("dlq")).messages == 2

        await eventually(dead)
        assert sorted(d.headers[H_REASON] for d in await read_stream(broker, "dlq")) == [
            "malformed",
            "max_deliver",
        ]
        (await broker.ensure_topology()).raise_for_conflicts()  # the fix: the stream is back

        nats_flags = flags(nats_settings)
        code, out, err = await run_cli(
            spawn, "replay", "dlq", "--reason", "max_deliver", "--dry-run", *nats_flags, name="dry"
        )
        assert code == 0, err
        assert "would re-drive   1 entries" in out, out
        assert (await broker.stream_info("dlq")).messages == 2

        code, out, err = await run_cli(
            spawn, "replay", "dlq", "--reason", "max_deliver", *nats_flags, name="redrive"
        )
        assert code == 0, err
        assert "re-driven        1 (+0 already re-driven)" in out, out
        assert [d.headers[H_REASON] for d in await read_stream(broker, "dlq")] == ["malformed"]

        async def enriched() -> bool:
            return await settled(broker, "enricher") and (await broker.stream_info("enriched")).messages == 1

        await eventually(enriched)
        [out_msg] = await read_stream(broker, "enriched")
        assert out_msg.msg_id == f"enriched/{msg.msg_id}"  # the id derives from the RAW content

        code, out, err = await run_cli(
            spawn, "replay", "dlq", "--reason", "max_deliver", *nats_flags, name="again"
        )
        assert code == 0, err
        assert "re-driven        0 (+0 already re-driven)" in out and "1 not selected" in out, out
    finally:
        stop.set()
        await live

    await write_until_settled(broker, clickhouse)
    assert clickhouse.query("SELECT count() FROM kubenetmon.network_flows_0").rows == [
        (4,)
    ]  # once, physically
    assert clickhouse.query("SELECT count() FROM kubenetmon.network_flows_0_exact").rows == [(4,)]


async def test_an_entry_stored_without_its_body_is_left_in_place(
    broker: Broker, nats_settings: NatsSettings, spawn: Callable[..., Process]
) -> None:
    """An oversized poison message's verdict is kept without its body: nothing to re-drive, nothing lost."""
    headers = {
        H_REASON: "oversized",
        H_STAGE: "enricher",
        H_ORIGINAL_SUBJECT: broker.raw_subject("n1"),
        H_ORIGINAL_STREAM: broker.stream_name("raw"),
        H_STREAM_SEQ: "7",
        H_OMITTED_BYTES: "1048000",
    }
    await broker.publish(broker.dlq_subject("enricher"), b"", msg_id="verdict/1", headers=headers)
    code, out, err = await run_cli(spawn, "replay", "dlq", *flags(nats_settings), name="omitted")
    assert code == 0, err
    assert "re-driven        0 (+0 already re-driven)" in out and "1 without body" in out, out
    assert "1048000 bytes omitted" in err and "left in place" in err, err
    assert (await broker.stream_info("dlq")).messages == 1
    assert (await broker.stream_info("raw")).messages == 0


async def test_forged_entries_are_refused_and_leave_raw_untouched(
    broker: Broker, nats_settings: NatsSettings, spawn: Callable[..., Process]
) -> None:
    """A role may write any headers into a DLQ entry; ``replay dlq`` runs as admin. An entry re-drives only
    into its stage's source stream, from its stage's own DLQ subject: each forgery is refused, counted,
    named in one line and left in the DLQ, and RAW keeps every message."""
    [msg] = interval_messages(base_time(), 1)
    await publish_raw(broker, [msg])
    prefix = broker.settings.subject_prefix
    purge = f"$JS.API.STREAM.PURGE.{broker.stream_name('raw')}"
    forgeries = [  # (stored under the DLQ subject of, stage header, original subject)
        ("writer", "writer", f"{prefix}.raw.node-z"),  # a writer entry is not RAW's
        ("writer", "enricher", f"{prefix}.raw.node-z"),  # the writer posing as the enricher
        ("writer", "writer", purge),
        ("enricher", "enricher", purge),
        ("enricher", "enricher", f"{prefix}.raw.>"),
        ("enricher", "enricher", "$SYS.REQ.SERVER.PING"),
        ("enricher", "metadata", f"{prefix}.raw.n1"),
        ("enricher", "enricher", "other.raw.n1"),  # another deployment's prefix
        ("enricher", "enricher", f"{prefix}.rawx.n1"),  # only a prefix of RAW's subject
        ("enricher", "enricher", f"{prefix}.enriched.n1"),  # the other stage's stream
        ("enricher", "enricher", f"{prefix}.dlq.enricher"),  # back into the DLQ
        ("enricher", "enricher", f"{prefix}.raw."),  # no node
        ("enricher", "enricher", f"{prefix}.raw.*"),
        ("enricher", "enricher", ""),  # none at all: left in place as without origin
        ("writer", "writer", f"$JS.API.STREAM.DELETE.{broker.stream_name('enriched')}"),
        ("writer", "writer", f"$JS.API.CONSUMER.DELETE.{broker.stream_name('enriched')}.writer"),
    ]
    for i, (dlq, stage, subject) in enumerate(forgeries):
        headers = {H_REASON: "malformed", H_STAGE: stage, H_ORIGINAL_SUBJECT: subject}
        await broker.publish(broker.dlq_subject(dlq), b"\x80", msg_id=f"forged/{i}", headers=headers)
    code, out, err = await run_cli(spawn, "replay", "dlq", *flags(nats_settings), name="forged")
    assert code == 1, out + err
    n = len(forgeries) - 1
    assert "re-driven        0 (+0 already re-driven)" in out and f"{n} refused" in out, out
    assert "1 without origin" in out, out
    assert err.count("refused:") == n and "Traceback" not in err, err
    assert (await broker.stream_info("dlq")).messages == n + 1
    assert [d.msg_id for d in await read_stream(broker, "raw")] == [msg.msg_id]
    assert (await broker.stream_info("enriched")).messages == 0


async def test_a_publish_to_a_subject_of_no_stream_is_poison_not_a_crash(broker: Broker) -> None:
    """The JetStream API answers a publish with something that is no acknowledgement (the crash seen was
    a ``PubAck`` missing ``stream`` and ``seq``): it surfaces as ``PoisonError``, nothing else."""
    with pytest.raises(PoisonError, match="not_a_stream"):
        await broker.publish("$JS.API.INFO", b"", msg_id="not-a-stream/1")
