"""The ledger's last leg against a real nats-server and chDB: ENRICHED ``report`` maps become exactly one
``agent_reports`` row per RAW chunk (rows or none, duplicates replaced), and ``check`` judges them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.ledger import Ledger, ReportRow
from kubenetmon.shared.schema import COLUMN_NAMES, EnrichedMessage
from kubenetmon.writer.query import check
from kubenetmon.writer.query import completeness as c
from kubenetmon.writer.query.sql import Reader
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink
from tests.support import eventually
from tests.support.messages import message, row
from tests.support.writer import Running, publish, settled

Query = Callable[[str], list[tuple[Any, ...]]]
Start = Callable[..., Awaitable[Running]]
T0 = 1_800_000_000 // 60 * 60


def chunk(
    start: int, chunk: int, chunks: int, *, rows: int, seq: int, lost: int = 0, stamps: int = 1
) -> EnrichedMessage:
    src = f"node-a/boot/{start}/{seq}/{chunk}"
    n = rows * chunks
    ledger = Ledger((start + 1) * 1000, (start + 61) * 1000, n, 150 * n, 0, 9, lost, 0, stamps)
    report = ReportRow("boot", start, 60, seq, chunk, chunks, rows, ledger)
    if rows:
        msg = message(src, [row(src, i, start=start) for i in range(rows)])
    else:
        msg = EnrichedMessage(src, "node-a", 1, list(COLUMN_NAMES), [[] for _ in COLUMN_NAMES])
    return replace(msg, report=report)


async def test_reports_become_one_row_per_chunk_and_check_judges_them(
    broker: Broker, clickhouse: Sink, start_writer: Start, query: Query, chdb_settings: ClickHouseSettings
) -> None:
    msgs = [
        chunk(T0, 0, 1, rows=3, seq=1),
        chunk(T0 + 60, 0, 1, rows=0, seq=2),  # an idle interval: a report without rows
        chunk(T0 + 120, 0, 2, rows=2, seq=3),  # chunk 1 of this report never arrives
        chunk(T0 + 180, 0, 1, rows=1, seq=4, lost=2),
        chunk(T0 + 240, 0, 1, rows=1, seq=5, stamps=0),  # conntrack stamped no creation times
    ]
    await publish(broker, msgs)
    await publish(broker, msgs[:2], msg_ids=["again-0", "again-1"])  # redelivered as new messages
    run = await start_writer()
    await eventually(lambda: settled(broker))
    await run.stop()

    got = query(
        "SELECT sourceId, chunk, chunks, chunkRows, spanFromMs, eventsLost, toUInt32(spanFrom) "
        "FROM kubenetmon.agent_reports_exact ORDER BY sourceId"
    )
    assert got == [
        (m.source, m.report.chunk, m.report.chunks, m.report.chunk_rows, m.report.ledger.span_from_ms,
         m.report.ledger.events_lost, m.report.ledger.span_from_ms // 1000)
        for m in msgs
        if m.report is not None
    ]  # fmt: skip
    assert query("SELECT count() FROM {x}") == [(7,)]
    assert query(
        "SELECT seq, conntrackTimestamps FROM kubenetmon.agent_reports_exact WHERE seq >= 4 ORDER BY seq"
    ) == [
        (4, 1),
        (5, 0),
    ]

    reader = Reader(chdb_settings)
    try:
        spec = check.CheckSpec(T0, T0 + 360, (), 3600, "network_flows_0_exact")
        step, verdicts = check.judge(reader, spec)
        accepting = replace(spec, accept_no_timestamps=True)
        _, accepted = check.judge(reader, accepting)
    finally:
        reader.close()
    assert step == 60
    assert [v.state for v in verdicts] == [c.COMPLETE, c.COMPLETE, c.PARTIAL, c.LOSSY, c.AT_RISK, c.SILENT]
    assert [v.state for v in accepted][4] == c.COMPLETE
