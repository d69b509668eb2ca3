"""What JetStream stores per flow, against what ClickHouse stores for the same flows, in one run.

The real enricher (``enricher_common``'s 10k-pod cluster and node-0's traffic) labels ``--messages``
RAW messages of ``--rows`` records. Their RAW payloads, in layout v1 (a msgpack array per row) and v2
(a binary per field, integers as byte planes), and their ENRICHED payloads, in layout v1 (plain
arrays) and v2 (dictionary-coded runs), are published into one real nats-server, one stream per
(payload, compression) pair, with ``Nats-Msg-Id`` headers as the services publish them. The same rows
go into chDB's flows table through the writer's batch and sink, merged with ``OPTIMIZE ... FINAL``.

Printed per stream: bytes per RAW record or ENRICHED row as JetStream accounts them (``state.bytes``,
what ``max_bytes`` counts) and as stored on disk; and nats-server's CPU seconds to store the stream.
Stored bytes: the server compresses a message block when it is sealed (full), so the last block of
each stream is still plain; the figure is the accounted bytes times the sealed blocks' ratio of disk
bytes to plain bytes (``--messages`` is chosen so every stream seals several blocks). Then the ratio the
capacity goal is about: JetStream's bytes written per flow (RAW per record spread over its rows, plus
ENRICHED per row) over ClickHouse's bytes per row after merges.

The streams are published in a different order each run; ``--runs`` medians, every run listed.

    python bench/stream_bytes.py --ranges-dir DIR [--messages 1200 --rows 200 --runs 3]
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from enricher_common import OBSERVER, SETTINGS, arguments, build_index, load_ranges, traffic
from nats.js import api

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared import schema
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.flow_tables import INSERT_TYPES
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink


class _Subjects:
    max_payload = 1024 * 1024  # nats-server's default

    def enriched_subject(self, node: str) -> str:
        return f"kubenetmon.enriched.{node}"


class _NoSettle:
    async def ack(self) -> None: ...
    async def nak(self, delay: float | None) -> None: ...
    async def in_progress(self) -> None: ...
    async def term(self) -> None: ...


Payloads = list[tuple[str, bytes]]


def payloads(args: Any) -> tuple[Payloads, Payloads, Payloads, Payloads, int, int]:
    """(RAW v1, RAW v2, ENRICHED v1, ENRICHED v2) as (msg id, payload), records and rows of the
    ENRICHED ones."""
    table, _ = load_ranges(args.ranges_dir)
    index = build_index(args.pods, args.nodes, args.services)
    msgs = traffic(
        table,
        pods=args.pods,
        nodes=args.nodes,
        services=args.services,
        messages=args.messages,
        rows=args.rows,
    )
    enricher = Enricher(Labeler(SETTINGS, index=index, ranges=table), broker=_Subjects(), max_rows=10**9)  # type: ignore[arg-type]
    raw, raw1, v1, v2 = [], [], [], []
    for i, m in enumerate(msgs):
        data = schema.encode_raw(m)
        raw.append((m.msg_id, data))
        raw1.append((m.msg_id, schema.encode_raw(m, version=1)))
        d = Delivery(_NoSettle(), data=data, subject=f"kubenetmon.raw.{OBSERVER}", headers={},
                     msg_id=m.msg_id, num_delivered=1, stream="RAW", consumer="enricher", stream_seq=i + 1,
                     timestamp=0.0, pending=0)  # fmt: skip
        for _, payload, msg_id in enricher.enrich(d):
            v2.append((msg_id, payload))
            v1.append((msg_id, schema.encode_enriched(schema.decode_enriched(payload), version=1)))
    rows = sum(schema.decode_enriched(p).row_count for _, p in v2)
    # RAW is ~7x smaller a record than ENRICHED v1 a row: more of it, so its stream seals blocks too
    more = traffic(table, pods=args.pods, nodes=args.nodes, services=args.services,
                   messages=args.raw_messages, rows=args.rows, seed=2)  # fmt: skip
    raw += [(f"{m.msg_id}/more", schema.encode_raw(m)) for m in more]
    raw1 += [(f"{m.msg_id}/more", schema.encode_raw(m, version=1)) for m in more]
    return raw1, raw, v1, v2, sum(len(m.rows) for m in msgs), rows


def clickhouse_bytes_per_row(v2: list[tuple[str, bytes]], directory: str) -> float:
    settings = ClickHouseSettings(dsn=f"chdb://{directory}", database="bench", table="flows", ttl_days=0)
    sink = Sink(settings)
    try:
        migrate(sink, database="bench", table="flows", ttl_days=0)
        for start in range(0, len(v2), 100):
            batch: Batch[int] = Batch(opened_at=0.0)
            for i, (_, payload) in enumerate(v2[start : start + 100]):
                batch.add(schema.decode_enriched(payload), i)
            sink.insert(sink.table, batch.columns, names=schema.COLUMN_NAMES, types=INSERT_TYPES)
        sink.command("OPTIMIZE TABLE bench.flows FINAL")
        rows, disk = sink.query(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
            "WHERE active AND database = 'bench' AND table = 'flows'"
        ).rows[0]
    finally:
        sink.close()
    return float(disk) / float(rows)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish_all(
    url: str, pid: int, streams: dict[str, tuple[str, list[tuple[str, bytes]]]]
) -> dict[str, Any]:
    """Each stream created and filled in turn; nats-server CPU seconds and accounted bytes per stream."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    out: dict[str, Any] = {}
    try:
        for name, (compression, data) in streams.items():
            await js.add_stream(
                api.StreamConfig(
                    name=name, subjects=[f"{name}.>"], storage=api.StorageType.FILE,
                    compression=api.StoreCompression(compression), duplicate_window=120.0,
                )
            )  # fmt: skip
            cpu0 = cpu_seconds(pid)
            for k in range(0, len(data), 64):  # 64 publishes in flight, as the services pipeline them
                acks = [
                    js.publish(f"{name}.{OBSERVER}", payload, headers={"Nats-Msg-Id": msg_id})
                    for msg_id, payload in data[k : k + 64]
                ]
                await asyncio.gather(*acks)
            info = await js.stream_info(name)
            out[name] = {"cpu_s": cpu_seconds(pid) - cpu0, "accounted": info.state.bytes}
    finally:
        await nc.close()
    return out


def disk_bytes(store: Path, name: str, accounted: int) -> tuple[float, int, int]:
    """(stored bytes estimate, blocks, bytes on disk) of one stream, the server stopped."""
    blocks = sorted((store / "jetstream" / "jetstream" / "$G" / "streams" / name / "msgs").glob("*.blk"),
                    key=lambda p: int(p.stem))  # fmt: skip
    sizes = [p.stat().st_size for p in blocks]
    on_disk = sum(sizes)
    if len(sizes) < 2:
        return float(on_disk), len(sizes), on_disk
    sealed_disk, plain_of_sealed = on_disk - sizes[-1], accounted - sizes[-1]
    return accounted * sealed_disk / plain_of_sealed, len(sizes), on_disk


def one_run(run: int, kinds: dict[str, tuple[str, list[tuple[str, bytes]]]], workdir: Path) -> dict[str, Any]:
    names = list(kinds)
    order = names[run % len(names) :] + names[: run % len(names)]
    store = workdir / f"nats-{run}"
    store.mkdir()
    with NatsServer(store) as server:
        assert server.pid is not None
        stats = asyncio.run(publish_all(server.url, server.pid, {n: kinds[n] for n in order}))
    for name in names:
        stats[name]["stored"], stats[name]["blocks"], stats[name]["on_disk"] = disk_bytes(
            store, name, stats[name]["accounted"]
        )
    return stats


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--rows", type=int, default=200, help="records per RAW message")
    parser.add_argument("--raw-messages", type=int, default=4000, help="RAW messages published besides")
    parser.set_defaults(runs=3)
    args = parser.parse_args()
    started = time.perf_counter()
    raw1, raw, v1, v2, records, rows = payloads(args)
    raw_records = len(raw) * args.rows
    print(f"{len(raw)} RAW messages, {records} records -> {len(v2)} ENRICHED messages, {rows} rows "
          f"({time.perf_counter() - started:.1f}s to label)")  # fmt: skip
    kinds = {
        "RAW_V1_NONE": ("none", raw1),
        "RAW_V1_S2": ("s2", raw1),
        "RAW_V2_NONE": ("none", raw),
        "RAW_V2_S2": ("s2", raw),
        "ENRICHED_V1_NONE": ("none", v1),
        "ENRICHED_V1_S2": ("s2", v1),
        "ENRICHED_V2_NONE": ("none", v2),
        "ENRICHED_V2_S2": ("s2", v2),
    }
    with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
        ch = clickhouse_bytes_per_row(v2, f"{tmp}/ch")
        gc.collect()
        runs = [one_run(r, kinds, Path(tmp)) for r in range(args.runs)]
    print(f"ClickHouse, after OPTIMIZE FINAL: {ch:.1f} B/row")
    print(f"{'stream':<18}{'unit':>8}{'accounted B':>13}{'stored B':>10}{'blocks':>8}"
          f"{'nats-server CPU us/unit (runs)':>34}")  # fmt: skip
    per_unit: dict[str, float] = {}
    for name in kinds:
        unit, count = ("record", raw_records) if name.startswith("RAW") else ("row", rows)
        first = runs[0][name]
        stored = statistics.median(r[name]["stored"] for r in runs) / count
        cpu = [r[name]["cpu_s"] / count * 1e6 for r in runs]
        per_unit[name] = stored
        print(f"{name:<18}{unit:>8}{first['accounted'] / count:>13.1f}{stored:>10.1f}{first['blocks']:>8}"
              f"{statistics.median(cpu):>12.2f} ({', '.join(f'{c:.2f}' for c in cpu)})")  # fmt: skip
    rows_per_record = rows / records
    pairs = (("RAW_V1_NONE", "ENRICHED_V1_NONE"), ("RAW_V1_S2", "ENRICHED_V2_S2"),
             ("RAW_V2_S2", "ENRICHED_V2_S2"), ("RAW_V1_NONE", "ENRICHED_V2_NONE"),
             ("RAW_V1_S2", "ENRICHED_V1_S2"))  # fmt: skip
    for raw_name, enriched_name in pairs:
        per_row = per_unit[raw_name] / rows_per_record + per_unit[enriched_name]
        print(
            f"JetStream per row ({raw_name} + {enriched_name}): {per_row:.1f} B"
            f" = {per_row / ch:.2f}x ClickHouse"
        )


if __name__ == "__main__":
    main()
