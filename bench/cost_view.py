"""Benchmark: what pricing rows at query time costs, ``kubenetmon cost`` against a bytes report.

In a fresh chDB directory migrated by the real migrations (shipped price books loaded), it inserts N flow
rows spread over 30 days (every class, three clouds, both directions), then alternates, several times,
the baseline (the same grouping and window summing ``bytes`` over the exact view) and ``kubenetmon
cost``'s query over the cost view, and prints the median wall time of each and the ratio (cost / baseline;
> 1 means slower). The directory is removed at the end.

    .venv/bin/python bench/cost_view.py [--rows 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.query.cost import CostSpec, build_query
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink

CLASSES = "['INTRA_VPC', 'INTRA_VPC', 'INTRA_REGION', 'INTER_REGION', 'PUBLIC_INTERNET', 'UNKNOWN']"
CLOUDS = "['aws', 'gcp', 'azure']"


def populate(sink: Sink, *, rows: int, now: int) -> None:
    sink.command(
        f"INSERT INTO {sink.database}.{sink.table} (intervalStartTime, intervalSeconds, connectionClass, "
        "crossZone, direction, localCloud, localRegion, remoteRegion, localNamespace, localApp, "
        "observerNode, flowId, bytes, enrichedAt) "
        f"SELECT toDateTime({now} - 30 * 86400 + intDiv(number * 30 * 86400, {rows})), 60, "
        f"{CLASSES}[number % 6 + 1], number % 6 = 1, if(number % 2 = 0, 'out', 'in'), "
        f"{CLOUDS}[intDiv(number, 6) % 3 + 1], 'us-east-1', if(number % 5 = 0, 'eu-west-1', 'us-east-1'), "
        "concat('ns-', toString(number % 40)), concat('app-', toString(number % 400)), "
        "concat('node-', toString(number % 50)), number, 1000 + number % 100000, 1 "
        f"FROM numbers({rows})"
    )


def timed(sink: Sink, sql: str) -> float:
    start = time.perf_counter()
    sink.query(sql)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kubenetmon-cost-bench-"))
    settings = ClickHouseSettings(dsn=f"chdb://{workdir}/clickhouse", database="kubenetmon")
    sink = Sink(settings)
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
        now = int(time.time())
        populate(sink, rows=args.rows, now=now)
        spec = CostSpec(by="namespace", database=sink.database, view=f"{sink.table}_cost")
        cost_sql = build_query(spec, now=now)
        baseline_sql = (
            cost_sql.replace(f"{sink.table}_cost", f"{sink.table}_exact")
            .replace("sum(costUSD)", "sum(bytes)")
            .replace("costEntry = ''", "connectionClass = 'UNKNOWN'")
        )
        timed(sink, baseline_sql), timed(sink, cost_sql)  # warm both
        base, cost = [], []
        for _ in range(args.rounds):
            base.append(timed(sink, baseline_sql))
            cost.append(timed(sink, cost_sql))
        b, c = statistics.median(base), statistics.median(cost)
        print(f"{args.rows:,} rows, {args.rounds} rounds, medians:")
        print(f"  baseline (bytes by namespace, exact view): {b * 1000:8.1f} ms")
        print(f"  kubenetmon cost --by namespace (cost view): {c * 1000:8.1f} ms")
        print(f"  ratio cost / baseline: {c / b:.2f}")
    finally:
        sink.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
