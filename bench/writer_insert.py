"""Writer insert cost into chDB: the writer's batch path vs a bare clickhouse-connect insert of the same rows.

The rows are the real enricher's output (``enricher_common``'s cluster and node-0's traffic, RAW chunks
with a ledger): pod rows, node rows and one ``agent_reports`` row per RAW chunk, in batches of about
``--batch-rows`` rows (the writer's default batch). Both sides insert them into the same migrated tables
of the same embedded engine, in one process; each timed run starts from empty tables, with background
merges stopped (they would bill one side for the other's parts). Rounds alternate the cases, in a
rotated order, so load on the machine falls on every case alike.

- bare:    one ``client.insert(..., column_oriented=True)`` per table and batch of ready-made columns
           (flows, node rows, ledger rows), in the types the writer sends, with the settings any
           caller needs for them (type conversion, partitions): a plain clickhouse-connect insert.
- writer:  ``Batch.add`` of each decoded ENRICHED message (reorder, concatenate, row ownership, ledger
           row), then ``insert.insert_batch`` through the writer's ``Sink``.
- bare, writer settings: the bare inserts with the settings the writer sends (``optimize_on_insert=0``
  among them): what the writer's own code costs, apart from the engine work its settings save.
- also: both sides from the msgpack bytes: strict ``decode_enriched`` of the v2 layout the enricher
  writes, vs a bare ``msgpack.unpackb`` of the plain v1 arrays of the same rows.

Printed per case: process CPU time (every thread, the engine's included) and wall time per batch,
median and spread over ``--runs`` rounds, and the ratio writer/bare of each round (paired: both ran
in the same round), median and spread. The goal is a CPU ratio bare/writer of at least 0.95.

    python bench/writer_insert.py [--messages 160] [--rows 200] [--batch-rows 50000] [--runs 7]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from enricher_common import SETTINGS, build_index, traffic  # type: ignore[import-not-found]

from kubenetmon.enricher import sources
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared import schema
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import COLUMN_NAMES, EnrichedMessage, decode_enriched
from kubenetmon.shared.schema.raw import RawMessage
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.flow_tables import (
    INSERT_TYPES,
    NODE_COLUMN_NAMES,
    NODE_INSERT_TYPES,
    REPORT_COLUMNS,
    REPORT_INSERT_TYPES,
    REPORTS_TABLE,
    node_table,
)
from kubenetmon.writer.insert import insert_batch
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink

DATA = Path(__file__).resolve().parent.parent / "tests" / "enricher" / "data"
RANGE_FILES = tuple(
    str(DATA / n) for n in ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
)
DB = "bench"
TABLE = "flows"
_INSERT_SETTINGS = {"input_format_native_allow_types_conversion": 1, "max_partitions_per_insert_block": 0}


class _Subjects:
    max_payload = 8 << 20

    def enriched_subject(self, node: str) -> str:
        return f"kubenetmon.enriched.{node}"


def enriched_payloads(args: argparse.Namespace) -> list[bytes]:
    """The enricher's ENRICHED v2 payloads for ``--messages`` RAW chunks of ``--rows`` records."""
    table = sources.load_table(sources.RangeSettings(sources=RANGE_FILES), private=SETTINGS.private)
    index = build_index(args.pods, args.nodes, args.services)
    enricher = Enricher(Labeler(SETTINGS, index=index, ranges=table), broker=_Subjects(), max_rows=10**9)  # type: ignore[arg-type]
    out = []
    for m in traffic(
        table,
        pods=args.pods,
        nodes=args.nodes,
        services=args.services,
        messages=args.messages,
        rows=args.rows,
    ):
        ledger = Ledger(m.start * 1000, (m.start + 60) * 1000, len(m.rows), 10**6, 10**3, 500, 0, 0, 1)
        raw = RawMessage(m.node, m.boot, m.start, m.seconds, m.seq, m.chunk, m.chunks, m.rows, ledger=ledger)
        out += [payload for _, payload, _ in enricher.enrich_message(raw)]
    return out


def batches_of(payloads: list[bytes], batch_rows: int) -> list[list[bytes]]:
    """Payloads grouped as the writer's batcher groups them: a batch closes at ``batch_rows`` rows."""
    out: list[list[bytes]] = [[]]
    rows = 0
    for p in payloads:
        if rows >= batch_rows:
            out.append([])
            rows = 0
        out[-1].append(p)
        rows += decode_enriched(p).row_count
    return out


def bare_tables(msgs: list[EnrichedMessage]) -> list[tuple[str, list[list[Any]], list[str], list[str]]]:
    """(table, columns, names, types) of each insert a bare caller makes for these messages."""
    pods: list[list[Any]] = [[] for _ in COLUMN_NAMES]
    nodes: list[list[Any]] = [[] for _ in NODE_COLUMN_NAMES]
    for m in msgs:  # the enricher's messages hold their table's columns in its order
        for column, values in zip(nodes if "localKind" in m.columns else pods, m.data, strict=True):
            column.extend(values)
    batch: Batch[int] = Batch(opened_at=0.0)
    for i, m in enumerate(msgs):
        batch.add(m, i)
    out = [(TABLE, pods, list(COLUMN_NAMES), list(INSERT_TYPES))]
    if nodes[0]:
        out.append((node_table(TABLE), nodes, list(NODE_COLUMN_NAMES), list(NODE_INSERT_TYPES)))
    ledger = batch.report_columns()
    if ledger:
        out.append((REPORTS_TABLE, ledger, list(REPORT_COLUMNS), list(REPORT_INSERT_TYPES)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=160, help="RAW chunks enriched")
    ap.add_argument("--rows", type=int, default=200, help="records per RAW chunk")
    ap.add_argument("--batch-rows", type=int, default=50_000, help="rows that close a batch (writer default)")
    ap.add_argument("--runs", type=int, default=7, help="rounds; medians and spreads are reported")
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--services", type=int, default=500)
    opts = ap.parse_args()

    payloads = enriched_payloads(opts)
    batches = batches_of(payloads, opts.batch_rows)
    decoded = [[decode_enriched(p) for p in b] for b in batches]
    plain = [[schema.encode_enriched(m, version=1) for m in msgs] for msgs in decoded]
    bare_inserts = [bare_tables(msgs) for msgs in decoded]
    rows = sum(m.row_count for msgs in decoded for m in msgs)
    reports = sum(m.report is not None for msgs in decoded for m in msgs)

    with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
        settings = ClickHouseSettings(dsn=f"chdb://{tmp}/ch", database=DB, table=TABLE, ttl_days=0)
        sink = Sink(settings)
        migrate(sink, database=DB, table=TABLE, ttl_days=0)
        client = clickhouse_connect.get_client(interface="chdb", path=f"{tmp}/ch")
        tables = (TABLE, node_table(TABLE), REPORTS_TABLE)
        for t in tables:
            client.command(f"SYSTEM STOP MERGES {DB}.{t}")

        def truncate() -> None:
            for t in tables:
                client.command(f"TRUNCATE TABLE {DB}.{t}")

        def bare_with(settings: dict[str, Any]) -> Callable[[], None]:
            def run() -> None:
                for inserts in bare_inserts:
                    for table, cols, names, types in inserts:
                        client.insert(table, cols, database=DB, column_names=names, column_type_names=types,
                                      column_oriented=True, settings=settings)  # fmt: skip

            return run

        bare = bare_with(_INSERT_SETTINGS)

        def bare_from_bytes() -> None:
            for msgs in plain:
                objs = [msgpack.unpackb(p) for p in msgs]
                pods: list[list[Any]] = [[] for _ in COLUMN_NAMES]
                nodes: list[list[Any]] = [[] for _ in NODE_COLUMN_NAMES]
                for obj in objs:
                    for column, values in zip(
                        nodes if "localKind" in obj["cols"] else pods, obj["data"], strict=True
                    ):
                        column.extend(values)
                client.insert(TABLE, pods, database=DB, column_names=list(COLUMN_NAMES),
                              column_type_names=list(INSERT_TYPES), column_oriented=True,
                              settings=_INSERT_SETTINGS)  # fmt: skip
                if nodes[0]:
                    client.insert(node_table(TABLE), nodes, database=DB, column_names=list(NODE_COLUMN_NAMES),
                                  column_type_names=list(NODE_INSERT_TYPES), column_oriented=True,
                                  settings=_INSERT_SETTINGS)  # fmt: skip
                ledger = [_report(o) for o in objs if "report" in o]
                if ledger:
                    client.insert(REPORTS_TABLE, [list(c) for c in zip(*ledger, strict=True)],
                                  database=DB, column_names=list(REPORT_COLUMNS),
                                  column_type_names=list(REPORT_INSERT_TYPES), column_oriented=True,
                                  settings=_INSERT_SETTINGS)  # fmt: skip

        def writer_path(from_bytes: bool) -> Callable[[], None]:
            def run() -> None:
                for n, msgs in enumerate(decoded):
                    batch: Batch[int] = Batch(opened_at=0.0)
                    if from_bytes:
                        for i, payload in enumerate(batches[n]):
                            batch.add(decode(payload), i, size=len(payload))
                    else:
                        for i, msg in enumerate(msgs):
                            batch.add(msg, i)
                    insert_batch(sink, batch, batch.report_columns())

            return run

        # the writer's decoding: the columns are only read (``share``; older code had no such keyword)
        share = "share" in inspect.signature(decode_enriched).parameters
        decode = functools.partial(decode_enriched, share=True) if share else decode_enriched
        cases: dict[str, Callable[[], None]] = {
            "bare insert": bare,
            "writer batch path": writer_path(False),
            "bare unpack + insert": bare_from_bytes,
            "writer decode + batch path": writer_path(True),
            "bare insert, writer settings": bare_with(sink._insert_settings),
        }
        for fn in cases.values():  # warm-up: the first insert pays one-off engine costs
            truncate()
            fn()
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        wall: dict[str, list[float]] = {name: [] for name in cases}
        order = list(cases)
        loads = [os.getloadavg()[0]]
        for r in range(opts.runs):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                truncate()
                w, c = time.perf_counter(), time.process_time()
                cases[name]()
                cpu[name].append((time.process_time() - c) / len(batches))
                wall[name].append((time.perf_counter() - w) / len(batches))
            loads.append(os.getloadavg()[0])
        client.close()
        sink.close()

    print(
        f"{rows:,} rows ({reports} RAW chunks, {len(payloads)} ENRICHED messages) in {len(batches)} batches "
        f"of ~{rows // len(batches):,} rows; {opts.runs} rounds; load average (1 min) "
        f"{min(loads):.1f}..{max(loads):.1f}"
    )
    print(f"  {'per batch, ms':<28} {'CPU median':>10} {'(spread)':>17} {'wall median':>12} {'(spread)':>17}")
    for name in cases:
        c, w = cpu[name], wall[name]
        print(
            f"  {name:<28} {statistics.median(c) * 1e3:>10.1f} {_spread(c):>17} "
            f"{statistics.median(w) * 1e3:>12.1f} {_spread(w):>17}"
        )
    for label, fast, slow in (
        ("bare insert / writer batch path", "bare insert", "writer batch path"),
        ("bare unpack+insert / writer decode+batch", "bare unpack + insert", "writer decode + batch path"),
        (
            "bare insert with the writer's settings / writer batch path",
            "bare insert, writer settings",
            "writer batch path",
        ),
    ):
        for kind, series in (("CPU", cpu), ("wall", wall)):
            ratios = [b / a for a, b in zip(series[slow], series[fast], strict=True)]
            print(
                f"ratio {label} ({kind}, paired per round): {statistics.median(ratios):.2f} "
                f"({min(ratios):.2f}..{max(ratios):.2f})"
                + ("  goal >= 0.95" if kind == "CPU" and fast == "bare insert" else "")
            )


def _report(obj: dict[str, Any]) -> tuple[Any, ...]:
    """A v1 message's ledger row, as a bare reader of the map would build it."""
    r = g = obj["report"]
    return (
        obj["src"], obj["node"], r["boot"], r["start"], r["secs"], r["seq"], r["chunk"], r["chunks"],
        r["chunk_rows"], g["from"], g["to"], g["rows"], g["bytes"], g["packets"], g["flows"], g["lost"],
        g["drops"], obj["at"], g.get("ts", -1), r.get("rejected", ""), g.get("link", -1), g.get("bound", 0),
    )  # fmt: skip


def _spread(values: list[float]) -> str:
    return f"({min(values) * 1e3:.1f}..{max(values) * 1e3:.1f})"


if __name__ == "__main__":
    main()
