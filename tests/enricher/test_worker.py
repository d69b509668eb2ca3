"""The enricher against a real nats-server: RAW in, ENRICHED out, poison aside, shared work, drain."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from kubenetmon.enricher.worker import STAGE, Enricher, part_id
from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_REASON, consume
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.ledger import Ledger, ReportRow
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.kube import KubeApi
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.enricher import DEADLINE_S, NODES, PODS, RANGE_FILES, SERVICES, make_labeler, traffic
from tests.support.http import get
from tests.support.processes import http_port

Spawn = Callable[..., Process]


async def publish_raw(broker: Broker, msgs: list[schema.RawMessage]) -> None:
    for msg in msgs:
        await broker.publish(broker.raw_subject(msg.node), schema.encode_raw(msg), msg_id=msg.msg_id)


async def read_all(broker: Broker, kind: str, count: int) -> list[Delivery]:
    """Exactly ``count`` messages of stream ``kind`` (and then nothing more)."""
    source = await broker.ephemeral(kind)
    got: list[Delivery] = []
    try:
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < count:
                got += await source.fetch(count - len(got), 0.5)
        got += await source.fetch(10, 0.2)
    finally:
        await source.close()
    return got


async def settled(broker: Broker) -> bool:
    stats = await broker.consumer_info(STAGE)
    return stats.num_pending == 0 and stats.num_ack_pending == 0


@pytest.fixture
async def running(broker: Broker, inventory_file: Path) -> AsyncIterator[Callable[..., Enricher]]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(*, max_rows: int = 1000) -> Enricher:
        enricher = Enricher(make_labeler(inventory_file), broker=broker, max_rows=max_rows)
        run = consume(
            broker,
            consumer=STAGE,
            handler=enricher.handle,
            stop=stop,
            batch=8,
            fetch_timeout=0.2,
            stage=STAGE,
        )
        tasks.append(asyncio.create_task(run))
        return enricher

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)


def without_version(data: list[list[Any]]) -> list[list[Any]]:
    at = schema.COLUMN_INDEX["enrichedAt"]
    return [col for i, col in enumerate(data) if i != at]


async def test_raw_in_enriched_out_with_the_labelers_rows(
    broker: Broker, running: Callable[..., Enricher], inventory_file: Path
) -> None:
    msgs = traffic(3, 30)
    running()
    await publish_raw(broker, msgs)
    await eventually(lambda: settled(broker))
    out = await read_all(broker, "enriched", 3)
    assert len(out) == 3
    reference = make_labeler(inventory_file)
    by_source = {schema.decode_enriched(d.data).source: d for d in out}
    for msg in msgs:
        delivery = by_source[msg.msg_id]
        enriched = schema.decode_enriched(delivery.data)
        assert delivery.msg_id == schema.enriched_msg_id(msg.msg_id)
        assert delivery.subject == broker.enriched_subject("n1")
        expected = reference.label(msg, enriched_at=0)
        assert enriched.columns == list(schema.COLUMN_NAMES)
        assert without_version(enriched.data) == without_version(expected.data)
        assert enriched.row_count == 2 * 20  # 10 of 30 records are node flows, dropped
        assert set(enriched.data[schema.COLUMN_INDEX["remoteService"]]) == {"", "default/api"}


async def test_a_big_output_is_split_with_derived_ids(
    broker: Broker, running: Callable[..., Enricher]
) -> None:
    msg = traffic(1, 300)[0]  # 200 kept records -> 400 rows -> 3 parts of at most 150
    running(max_rows=150)
    await publish_raw(broker, [msg])
    await eventually(lambda: settled(broker))
    out = await read_all(broker, "enriched", 3)
    assert sorted(d.msg_id for d in out) == sorted(part_id(msg.msg_id, k) for k in range(3))
    decoded = [schema.decode_enriched(d.data) for d in out]
    assert sorted(m.row_count for m in decoded) == [100, 150, 150]
    ids = [i for m in decoded for i in m.data[schema.COLUMN_INDEX["flowId"]]]
    assert len(ids) == len(set(ids)) == 400


async def test_poison_goes_to_the_dlq_while_good_messages_flow(
    broker: Broker, running: Callable[..., Enricher]
) -> None:
    good = traffic(2, 6)
    wrong_version = msgpack.packb({"v": 99, "t": "raw"})
    four = b"\x01\x02\x03\x04"
    short_row = [6, 2, 0, b"\x01\x02", four, 1, 2, four, four, 2, 1, 1, 1, 1, 1]  # a 2-byte IPv4 source
    header = {"v": 1, "t": "raw", "node": "n1", "boot": "b", "start": 0, "secs": 60, "seq": 0, "chunk": 0}
    bad_address = msgpack.packb({**header, "chunks": 1, "rows": [short_row]})
    running()
    await publish_raw(broker, good[:1])
    subject = broker.raw_subject("n1")
    await broker.publish(subject, b"\xc1 not msgpack", msg_id="bad-1")
    await broker.publish(subject, wrong_version, msg_id="bad-2")
    await broker.publish(subject, bad_address, msg_id="bad-3")
    await publish_raw(broker, good[1:])
    await eventually(lambda: settled(broker))
    dead = await read_all(broker, "dlq", 3)
    assert sorted(d.headers[H_REASON] for d in dead) == ["address", "malformed", "version"]
    enriched = await read_all(broker, "enriched", 2)
    assert {schema.decode_enriched(d.data).source for d in enriched} == {m.msg_id for m in good}


async def test_empty_results_are_acked_without_output(
    broker: Broker, running: Callable[..., Enricher]
) -> None:
    msg = traffic(1, 3)[0]
    dropped_only = schema.RawMessage(**_fields(msg, rows=[msg.rows[2]]))  # a node flow only
    running()
    await publish_raw(broker, [dropped_only])
    await eventually(lambda: settled(broker))
    assert await read_all(broker, "enriched", 0) == []


async def test_the_ledger_is_handed_on_once_per_raw_chunk_even_without_rows(
    broker: Broker, running: Callable[..., Enricher]
) -> None:
    ledger = Ledger(1_000, 61_000, 300, 9_000, 600, 12, 1, 2)
    big = schema.RawMessage(**_fields(traffic(1, 300)[0]), ledger=ledger)  # three parts of output
    idle = schema.RawMessage("n1", "boot", big.start + 60, 60, 5, 0, 1, [], ledger=ledger)
    running(max_rows=150)
    await publish_raw(broker, [big, idle])
    await eventually(lambda: settled(broker))
    decoded = {d.msg_id: schema.decode_enriched(d.data) for d in await read_all(broker, "enriched", 4)}
    reports = {i: m.report for i, m in decoded.items() if m.report is not None}
    assert sorted(reports) == [part_id(big.msg_id, 0), part_id(idle.msg_id, 0)]
    assert reports[part_id(big.msg_id, 0)] == ReportRow(big.boot, big.start, 60, 0, 0, 1, 300, ledger)
    assert reports[part_id(idle.msg_id, 0)] == ReportRow("boot", idle.start, 60, 5, 0, 1, 0, ledger)
    assert decoded[part_id(idle.msg_id, 0)].row_count == 0


def _fields(msg: schema.RawMessage, **changes: Any) -> dict[str, Any]:
    values = {
        name: getattr(msg, name)
        for name in ("node", "boot", "start", "seconds", "seq", "chunk", "chunks", "rows")
    }
    values.update(changes)
    return values


# ------------------------------------------------------------------------------------ processes


def enricher_argv(nats: NatsSettings, inventory_file: Path, *extra: str) -> list[str]:
    ranges = ",".join(RANGE_FILES)
    return [
        *KUBENETMON, "enricher", *flags(nats), "--inventory", str(inventory_file), "--ranges", ranges,
        "--cloud", "aws", "--region", "us-west-2", "--cluster", "test", "--environment", "ci",
        "--http-host", "127.0.0.1", "--http-port", "0", "--batch", "4", "--fetch-timeout", "200ms",
        "--interval", "0", "--ttl-days", "0",  # the traffic's fixed times (T0) are neither aligned nor recent
        *extra,
    ]  # fmt: skip


def acked_by_worker(proc: Process) -> Counter[str]:
    """Deliveries each worker acknowledged, from the summary it logs when it stops."""
    out: Counter[str] = Counter()
    for record in proc.records():
        if record.get("stage") == STAGE and "settled_ack" in record:
            out[record["process"]] += record["settled_ack"]
    return out


async def test_two_processes_share_the_work_without_duplicates(
    broker: Broker, nats_settings: NatsSettings, inventory_file: Path, spawn: Spawn
) -> None:
    proc = spawn(*enricher_argv(nats_settings, inventory_file, "--workers", "2"), name="enricher")
    await eventually(lambda: http_port(proc) is not None)
    port = http_port(proc)
    assert port is not None
    await eventually(lambda: get(port, "/readyz")[0] == 200)  # both workers listed their index
    msgs = traffic(120, 10)
    await publish_raw(broker, msgs)
    await eventually(lambda: settled(broker))
    out = await read_all(broker, "enriched", len(msgs))
    sources_seen = Counter(schema.decode_enriched(d.data).source for d in out)
    assert sources_seen == Counter(m.msg_id for m in msgs)  # each RAW message once, none twice
    stats = await broker.consumer_info(STAGE)
    assert stats.num_redelivered == 0
    status, text = get(port, "/metrics")
    assert status == 200 and "kubenetmon_enricher_records_total 1200.0" in text
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
    acked = acked_by_worker(proc)
    assert sum(acked.values()) == len(msgs)
    assert set(acked) == {"enricher-0", "enricher-1"}  # both processes took a share


async def test_sigterm_drains_what_is_in_hand(
    broker: Broker, nats_settings: NatsSettings, inventory_file: Path, spawn: Spawn
) -> None:
    msgs = traffic(400, 50)
    await publish_raw(broker, msgs)
    proc = spawn(*enricher_argv(nats_settings, inventory_file, "--workers", "1"), name="enricher")

    async def some_enriched() -> bool:
        return (await broker.stream_info("enriched")).messages >= 20

    await eventually(some_enriched)
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
    stats = await broker.consumer_info(STAGE)
    assert stats.num_ack_pending == 0  # nothing left in flight: every fetched message was finished
    done = (await broker.stream_info("enriched")).messages
    assert 0 < done < len(msgs)  # stopped part-way
    assert done == stats.ack_floor_stream_seq == sum(acked_by_worker(proc).values())
    # a second run finishes the rest, and the duplicate window keeps every output single
    again = spawn(*enricher_argv(nats_settings, inventory_file, "--workers", "1"), name="again")
    await eventually(lambda: settled(broker), within=60)
    again.signal(signal.SIGTERM)
    assert await again.wait() == 0
    out = await read_all(broker, "enriched", len(msgs))
    assert Counter(schema.decode_enriched(d.data).source for d in out) == Counter(m.msg_id for m in msgs)


def test_bad_configuration_exits_2_naming_the_flag(tmp_path: Path) -> None:
    done = subprocess.run(
        [*KUBENETMON, "enricher", "--cloud", "oracle"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--cloud" in done.stderr
    done = subprocess.run(
        [*KUBENETMON, "enricher", "--private-cidr", "10.0.0.0/99", "--inventory", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "10.0.0.0/99" in done.stderr


async def test_a_watching_worker_is_ready_only_once_listed_and_labels_from_the_api(
    broker: Broker, nats_settings: NatsSettings, kube_api: KubeApi, kubeconfig: Path, spawn: Spawn
) -> None:
    for obj in NODES:
        kube_api.add("nodes", obj)
    for obj in SERVICES:
        kube_api.add("services", obj)
    for obj in PODS:
        kube_api.add("pods", obj)
    kube_api.hold_lists()
    argv = [
        a
        for a in enricher_argv(nats_settings, Path("unused"), "--workers", "1")
        if a not in ("--inventory", "unused")
    ]
    proc = spawn(*argv, "--kubeconfig", str(kubeconfig), name="enricher")
    await eventually(lambda: http_port(proc) is not None)
    port = http_port(proc)
    assert port is not None
    await asyncio.to_thread(kube_api.wait_for, ("pods", "list"), 1)
    assert get(port, "/readyz")[0] == 503  # listing is held: not ready
    kube_api.release_lists()
    await eventually(lambda: get(port, "/readyz")[0] == 200)
    msgs = traffic(2, 6)
    await publish_raw(broker, msgs)
    await eventually(lambda: settled(broker))
    out = [schema.decode_enriched(d.data) for d in await read_all(broker, "enriched", 2)]
    assert {p for m in out for p in m.data[schema.COLUMN_INDEX["localPod"]]} <= {f"web-{i}" for i in range(4)}
    assert "api-0" in {p for m in out for p in m.data[schema.COLUMN_INDEX["remotePod"]]}
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
