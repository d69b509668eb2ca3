"""End-to-end enricher throughput with W = 1 and W = 2 worker processes, through a real nats-server.

For each W: a fresh stream prefix, N RAW messages published up front (10k-pod cluster traffic), then
``kubenetmon enricher --workers W --inventory <10k pods>`` is started; the clock runs from the moment
the pool reports ready (``/readyz``) until the ``enricher`` consumer has nothing pending or unacked.
Wall time, on this machine (nats-server shares its cores), so it is a throughput, not a CPU ratio.

    python bench/enricher_pool.py --ranges-dir DIR [--messages 400 --rows 500 --workers 1,2]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from enricher_common import arguments, cluster_objects, load_ranges, range_files, traffic

from kubenetmon.cli.natsserver import NatsServer, free_port
from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings

KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def publish(broker: Broker, msgs: list[schema.RawMessage]) -> None:
    payloads = [(broker.raw_subject(m.node), schema.encode_raw(m), m.msg_id) for m in msgs]
    for i in range(0, len(payloads), 200):
        await asyncio.gather(*(broker.publish(s, p, msg_id=mid) for s, p, mid in payloads[i : i + 200]))


async def run_pool(
    workers: int,
    *,
    url: str,
    prefix: str,
    inventory: Path,
    ranges: str,
    msgs: list[schema.RawMessage],
    log: Path,
) -> float:
    settings = NatsSettings(
        urls=(url,), stream_prefix=prefix, subject_prefix=prefix.lower(), max_ack_pending=10_000
    )
    async with await Broker.connect(settings, name="bench", wait_s=10) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        await publish(broker, msgs)
        port = free_port()
        argv = [
            *KUBENETMON, "enricher", "--workers", str(workers), "--nats-url", url,
            "--nats-stream-prefix", prefix, "--nats-subject-prefix", prefix.lower(),
            "--nats-max-ack-pending", "10000", "--inventory", str(inventory),
            "--cloud", "aws", "--region", "us-west-2", "--cluster", "bench", "--environment", "bench",
            "--http-host", "127.0.0.1", "--http-port", str(port), "--batch", "16", "--log-format", "text",
        ] + (["--ranges", ranges] if ranges else [])  # fmt: skip
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)  # noqa: ASYNC220 (returns at once)
            try:
                deadline = time.monotonic() + 300
                while not await asyncio.to_thread(ready, port):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"enricher did not become ready; see {log}")
                    await asyncio.sleep(0.02)
                started = time.monotonic()
                while True:
                    stats = await broker.consumer_info("enricher")
                    if stats.num_pending == 0 and stats.num_ack_pending == 0:
                        return time.monotonic() - started
                    await asyncio.sleep(0.05)
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 60)


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--workers", default="1,2")
    parser.set_defaults(runs=3)
    args = parser.parse_args()
    table, _ = load_ranges(args.ranges_dir)
    ranges = ",".join(range_files(args.ranges_dir))
    msgs = traffic(
        table,
        pods=args.pods,
        nodes=args.nodes,
        services=args.services,
        messages=args.messages,
        rows=args.rows,
    )
    records = sum(len(m.rows) for m in msgs)
    with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
        inventory = Path(tmp) / "inventory.json"
        objects = cluster_objects(args.pods, args.nodes, args.services)
        inventory.write_text(
            json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": [o for objs in objects.values() for o in objs]}
            )
        )
        with NatsServer(Path(tmp) / "nats") as server:
            print(f"{len(msgs)} RAW messages, {records} records; {args.pods} pods; {table.prefixes} prefixes")
            results: dict[int, list[float]] = {}
            for run in range(args.runs):
                for w in (int(x) for x in args.workers.split(",")):
                    prefix = f"B{run}W{w}"
                    elapsed = asyncio.run(
                        run_pool(
                            w,
                            url=server.url,
                            prefix=prefix,
                            inventory=inventory,
                            ranges=ranges,
                            msgs=msgs,
                            log=Path(tmp) / f"{prefix}.log",
                        )
                    )
                    results.setdefault(w, []).append(records / elapsed)
                    print(f"  run {run}: W={w} {records / elapsed:,.0f} records/s")
    base = statistics.median(results[min(results)])
    for w, rates in sorted(results.items()):
        rate = statistics.median(rates)
        print(f"W={w}: median {rate:>10,.0f} records/s  ({rate / base:.2f}x W={min(results)})")


if __name__ == "__main__":
    main()
