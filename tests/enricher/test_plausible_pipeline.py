"""Implausible reports and oversized values, through a real nats-server, the enricher handler, the writer and
chDB: each implausible report is dead-lettered with its reason and absent from ClickHouse, ``check`` shows
its interval as rejected; a 1 MiB label (through an inventory) costs at most its own record."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from kubenetmon.enricher import inventory, plausible, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.fit import MAX_VALUE_CHARS
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_REASON, consume
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import RawMessage, RawRow, encode_raw
from kubenetmon.writer.query import check
from kubenetmon.writer.query import completeness as c
from kubenetmon.writer.sink import Sink
from tests.support import eventually
from tests.support.replay import (
    INTERVAL,
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    read_stream,
    settled,
    traffic_rows,
    write_inventory,
    write_until_settled,
)
from tests.support.writer import metric

SETTINGS = LabelSettings(cloud="aws", region="us-west-2")
U64 = (1 << 64) - 1


def with_ledger(
    rows: list[RawRow], *, start: int, node: str = "n1", seconds: int = INTERVAL, seq: int = 0, **lie: int
) -> RawMessage:
    """A one-chunk report whose ledger states its rows' totals (or ``lie`` instead)."""
    totals = {
        "rows": len(rows),
        "bytes": sum(r.orig_bytes + r.reply_bytes for r in rows),
        "packets": sum(r.orig_packets + r.reply_packets for r in rows),
    }
    totals.update(lie)
    ledger = Ledger(
        start * 1000, (start + seconds) * 1000, flows=len(rows), events_lost=0, table_drops=0, **totals
    )
    return RawMessage(node, "boot-1", start, seconds, seq, 0, 1, rows, ledger=ledger)


def huge(row: RawRow, **counters: int) -> RawRow:
    return row._replace(**counters)


async def run_stages(broker: Broker, clickhouse: Sink, enricher: Enricher) -> None:
    """The enricher until RAW is settled, then the writer until ENRICHED is."""
    stop = asyncio.Event()
    live = asyncio.create_task(
        consume(broker, consumer="enricher", handler=enricher.handle, stop=stop, batch=10, fetch_timeout=0.2,
                stage="enricher")
    )  # fmt: skip
    try:
        await eventually(lambda: settled(broker, "enricher"))
    finally:
        stop.set()
        await live
    await write_until_settled(broker, clickhouse)


def counted() -> Counter[str]:
    """The enricher's refusals so far: rejected reports by reason, its dead letters as ``dlq:<reason>``."""
    out: Counter[str] = Counter()
    for reason in plausible.REASONS:
        out[reason] = int(metric("kubenetmon_enricher_rejected_reports_total", reason=reason))
        out[f"dlq:{reason}"] = int(metric("kubenetmon_dlq_messages_total", stage="enricher", reason=reason))
    return out


def make_enricher(broker: Broker, inv: Path) -> Enricher:
    index = Index()
    inventory.load(index, inv)
    ranges = sources.load_table(sources.RangeSettings(), private=SETTINGS.private)
    labeler = Labeler(SETTINGS, index=index, ranges=ranges)
    return Enricher(labeler, broker=broker, max_rows=1000, bounds=plausible.Bounds())


async def test_each_implausible_report_is_dead_lettered_absent_and_rejected_in_check(
    broker: Broker, clickhouse: Sink, tmp_path: Path
) -> None:
    base = base_time()
    now = int(time.time())
    inv = write_inventory(tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES])
    rows = traffic_rows(0)
    good = with_ledger(rows, start=base)
    forged = [  # (reason, message), all published on n1's subject
        (
            "counter",
            with_ledger([huge(rows[0], orig_bytes=U64), *rows[1:]], start=base + 60, seq=1, bytes=U64),
        ),
        ("counter", with_ledger([huge(rows[0], reply_bytes=1 << 63), *rows[1:]], start=base + 120, seq=2)),
        ("unaligned", with_ledger(rows, start=base + 180 + 7, seq=3)),
        ("ledger", with_ledger(rows, start=base + 240, seq=4, bytes=1)),
        ("node_mismatch", with_ledger(rows, start=base + 300, seq=5, node="n2")),
        ("future", with_ledger(rows, start=(now + 10 * 86400) // 60 * 60, seq=6)),
        ("expired", with_ledger(rows, start=0, seq=7)),
        ("future", with_ledger(rows, start=4102444800, seq=8)),  # 2100-01-01
    ]
    await broker.publish(broker.raw_subject("n1"), encode_raw(good), msg_id=good.msg_id)
    for i, (_, msg) in enumerate(forged):
        await broker.publish(broker.raw_subject("n1"), encode_raw(msg), msg_id=f"forged/{i}")

    before = counted()
    await run_stages(broker, clickhouse, make_enricher(broker, inv))

    reasons = sorted(d.headers[H_REASON] for d in await read_stream(broker, "dlq"))
    assert reasons == sorted(reason for reason, _ in forged), reasons
    # each refusal counted by its reason, as a rejected report and as a dead letter
    want = Counter(reason for reason, _ in forged)
    assert counted() - before == Counter({**want, **{f"dlq:{r}": n for r, n in want.items()}})
    flows = clickhouse.query(
        "SELECT toUnixTimestamp(intervalStartTime), count(), sum(bytes), max(bytes) "
        "FROM kubenetmon.network_flows_0_exact GROUP BY 1"
    ).rows
    stored = sum(r.orig_bytes + r.reply_bytes for r in rows[:2])  # the third is a node flow, dropped
    assert [(int(t), int(n), int(s)) for t, n, s, _ in flows] == [(base, 4, stored)], flows
    assert clickhouse.query(
        "SELECT count() FROM kubenetmon.network_flows_0 WHERE bytes >= 4611686018427387904"
    ).rows == [(0,)]

    spec = check.CheckSpec(base, base + 360, (), 3600, "network_flows_0_exact", database="kubenetmon")
    _step, verdicts = check.judge(clickhouse, spec)
    states = {(v.node, v.start - base): (v.state, v.reasons) for v in verdicts}
    assert states[("n1", 0)] == (c.COMPLETE, ())
    assert states[("n1", 60)] == (c.REJECTED, ("counter",))
    assert states[("n1", 120)] == (c.REJECTED, ("counter",))
    assert states[("n1", 180)] == (c.REJECTED, ("unaligned",))
    assert states[("n1", 240)] == (c.REJECTED, ("ledger",))
    assert states[("n2", 300)] == (c.REJECTED, ("node_mismatch",))
    assert not c.whole(verdicts)
    assert "rejected" in c.summary(verdicts)


async def test_a_1_mib_label_costs_at_most_its_own_record(
    broker: Broker, clickhouse: Sink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = base_time()
    pods = cluster_pods(web0_app="x" * (1 << 20), created=base - 7200)
    inv = write_inventory(tmp_path / "inv.yaml", [*NODES, *pods, *SERVICES])
    msg = with_ledger(traffic_rows(0), start=base)
    await broker.publish(broker.raw_subject("n1"), encode_raw(msg), msg_id=msg.msg_id)
    assert len(encode_raw(msg)) < 1000  # the RAW report is small: its ENRICHED output is not

    cut_before = metric("kubenetmon_enricher_cut_values_total", column="localApp")
    with caplog.at_level(logging.WARNING, logger="kubenetmon.enricher.fit"):
        await run_stages(broker, clickhouse, make_enricher(broker, inv))
    assert metric("kubenetmon_enricher_cut_values_total", column="localApp") > cut_before  # counted

    assert (await broker.stream_info("dlq")).messages == 0
    rows = clickhouse.query(
        "SELECT localPod, length(localApp), sum(bytes) FROM kubenetmon.network_flows_0_exact "
        "GROUP BY localPod, localApp ORDER BY localPod"
    ).rows
    first, second = traffic_rows(0)[:2]
    assert [(p, int(n), int(s)) for p, n, s in rows] == [
        ("web-0", MAX_VALUE_CHARS, first.orig_bytes + first.reply_bytes),
        ("web-1", 3, second.orig_bytes + second.reply_bytes),
    ], rows
    cut = [r for r in caplog.records if "default/web-0" in r.getMessage() and "localApp" in r.getMessage()]
    assert cut, [r.getMessage() for r in caplog.records]
