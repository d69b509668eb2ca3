"""Writer insert throughput into chDB: the writer's batch path vs a bare clickhouse-connect insert.

Both sides insert the same rows into the same migrated table of the same embedded engine, in one
process, alternating runs; each run starts from an empty table. Printed: rows/s (median of the runs) and
the ratios; the floor for the writer path is 0.8x the bare insert.

- bare:    ``client.insert(table, columns, column_oriented=True)`` of ready-made columns, sent in the same
           types the writer sends (the fastest a caller of clickhouse-connect can do with these values).
- writer:  ``Batch.add`` of each decoded ENRICHED message (reorder, concatenate, row ownership), then
           ``Sink.insert`` (the same client call, with error classification around it).
- also reported: both sides starting from the msgpack bytes (strict ``decode_enriched`` of the ENRICHED
  layout the enricher writes, v2, vs a bare ``msgpack.unpackb`` of the plain v1 arrays of the same
  rows), and a bare insert in the table's own Python types (IPv4Address objects...).

Usage: ``python bench/writer_insert.py [--rows-per-message 500] [--messages 100] [--batches 4] [--runs 5]``
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import clickhouse_connect
import msgpack

from kubenetmon.shared.schema import COLUMN_NAMES, COLUMNS, EnrichedMessage, decode_enriched, encode_enriched
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.flow_tables import INSERT_TYPES
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink

_PODS = [f"web-{i:03d}-7f9c{i:04x}" for i in range(200)]
_APPS = ["web", "api", "db", "cache", "queue", "auth", ""]
_ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]


def _value(name: str, wire: str, rng: random.Random, start: int, seq: int) -> Any:
    if name == "intervalStartTime":
        return start
    if name == "intervalSeconds":
        return 60
    if name == "direction":
        return "out" if seq % 2 == 0 else "in"
    if name.endswith("Port"):
        return rng.randrange(1, 65536)
    if name.endswith("IPv4"):
        return rng.randrange(1 << 24, 1 << 32)
    if name == "ipFamily":
        return 4
    if name in ("bytes", "packets"):
        return rng.randrange(1, 1 << 30)
    if wire == "int":
        return rng.getrandbits(63)
    if name.endswith("Pod"):
        return rng.choice(_PODS)
    if name.endswith("App") or name.endswith("Workload"):
        return rng.choice(_APPS)
    if name.endswith("AvailabilityZone"):
        return rng.choice(_ZONES)
    if wire == "str":
        return rng.choice(("", "aws", "us-east-1", "prod", "INTRA_VPC", "TCP", "default", "node-17"))
    if wire == "bool":
        return rng.random() < 0.3
    if wire == "bytes16":
        return bytes(10) + b"\xff\xff" + rng.randbytes(4)
    return {"crossZone": True} if rng.random() < 0.3 else {}


def make_messages(count: int, rows: int, *, seed: int = 7) -> list[EnrichedMessage]:
    rng = random.Random(seed)
    start = int(time.time()) // 60 * 60 - 300
    out = []
    for k in range(count):
        data = [[_value(c.name, c.wire, rng, start, i) for i in range(rows)] for c in COLUMNS]
        out.append(EnrichedMessage(f"node/boot/{start}/0/{k}", "node", 1, list(COLUMN_NAMES), data))
    return out


def columns_of(msgs: list[EnrichedMessage]) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in COLUMN_NAMES]
    for msg in msgs:
        for i, values in enumerate(msg.data):
            cols[i].extend(values)
    return cols


def timed(fn: Callable[[], None], *, truncate: Callable[[], None]) -> float:
    truncate()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-message", type=int, default=500)
    ap.add_argument("--messages", type=int, default=100, help="messages per batch")
    ap.add_argument("--batches", type=int, default=4, help="batches per run")
    ap.add_argument("--runs", type=int, default=5)
    opts = ap.parse_args()

    batches = [make_messages(opts.messages, opts.rows_per_message, seed=b) for b in range(opts.batches)]
    payloads = [[encode_enriched(m) for m in msgs] for msgs in batches]
    plain_payloads = [[encode_enriched(m, version=1) for m in msgs] for msgs in batches]
    bare_columns = [columns_of(msgs) for msgs in batches]
    table_columns = [
        [
            [ipaddress.IPv4Address(v) for v in col] if c.name.endswith("IPv4") else col
            for c, col in zip(COLUMNS, cols, strict=True)
        ]
        for cols in bare_columns
    ]
    total_rows = opts.messages * opts.rows_per_message * opts.batches

    with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
        settings = ClickHouseSettings(dsn=f"chdb://{tmp}/ch", database="bench", table="flows", ttl_days=0)
        sink = Sink(settings)
        migrate(sink, database="bench", table="flows", ttl_days=0)
        client = clickhouse_connect.get_client(interface="chdb", path=f"{tmp}/ch")
        names = list(COLUMN_NAMES)
        insert_settings = {
            "input_format_native_allow_types_conversion": 1,
            "max_partitions_per_insert_block": 0,
        }

        def truncate() -> None:
            client.command("TRUNCATE TABLE bench.flows")

        def bare() -> None:
            for cols in bare_columns:
                client.insert(
                    "flows",
                    cols,
                    database="bench",
                    column_names=names,
                    column_type_names=list(INSERT_TYPES),
                    column_oriented=True,
                    settings=insert_settings,
                )

        def bare_table_types() -> None:
            for cols in table_columns:
                client.insert("flows", cols, database="bench", column_names=names, column_oriented=True)

        def bare_from_bytes() -> None:
            for msgs in plain_payloads:
                cols: list[list[Any]] = [[] for _ in names]
                for payload in msgs:
                    for i, values in enumerate(msgpack.unpackb(payload)["data"]):
                        cols[i].extend(values)
                client.insert(
                    "flows",
                    cols,
                    database="bench",
                    column_names=names,
                    column_type_names=list(INSERT_TYPES),
                    column_oriented=True,
                    settings=insert_settings,
                )

        def writer_path(decode: bool) -> Callable[[], None]:
            def run() -> None:
                for n, msgs in enumerate(batches):
                    batch: Batch[int] = Batch(opened_at=0.0)
                    if decode:
                        for i, payload in enumerate(payloads[n]):
                            batch.add(decode_enriched(payload), i, size=len(payload))
                    else:
                        for i, msg in enumerate(msgs):
                            batch.add(msg, i)
                    sink.insert(sink.table, batch.columns, names=COLUMN_NAMES, types=INSERT_TYPES)

            return run

        cases = {
            "bare insert (wire types)": bare,
            "writer batch path": writer_path(False),
            "bare unpack + insert": bare_from_bytes,
            "writer decode + batch path": writer_path(True),
            "bare insert (table types)": bare_table_types,
        }
        timed(bare, truncate=truncate)  # warm-up: first insert pays one-off engine costs
        timed(writer_path(True), truncate=truncate)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.runs):
            for name, fn in cases.items():
                samples[name].append(total_rows / timed(fn, truncate=truncate))
        client.close()
        sink.close()

    median = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"{total_rows} rows per run ({opts.batches} batches of {opts.messages} x {opts.rows_per_message}), "
        f"{opts.runs} runs, median rows/s:"
    )
    for name, value in median.items():
        spread = f"{min(samples[name]):,.0f}..{max(samples[name]):,.0f}"
        print(f"  {name:<30} {value:>12,.0f}   ({spread})")
    floor = median["writer batch path"] / median["bare insert (wire types)"]
    full = median["writer decode + batch path"] / median["bare unpack + insert"]
    print(f"ratio writer batch path / bare insert:          {floor:.2f}  (floor 0.80)")
    print(f"ratio writer decode+batch / bare unpack+insert:  {full:.2f}")
    types = median["bare insert (wire types)"] / median["bare insert (table types)"]
    print(f"ratio bare wire types / bare table types:        {types:.2f}")


if __name__ == "__main__":
    main()
