"""Soak: the pipeline at twice a stated nominal rate for a long while; throughput, lag and memory slope.

nats-server, ``kubenetmon enricher`` and ``kubenetmon writer`` (into a chDB directory) run as separate
processes, exactly as deployed. A synthetic publisher in this process stands in for the agents (real
conntrack at volume is not practical here): it publishes RAW messages of ``--rows`` records on a fixed
schedule so that ``--rate x --factor`` records/s reach the RAW stream (a late message is published as
soon as possible, never skipped, and the achieved rate is reported).

Every ``--sample`` seconds it records the consumers' lag (``num_pending``, ``num_ack_pending`` of the
``enricher`` and ``writer`` durables), the enricher's and writer's counters from ``/metrics``, and the
RSS of every process of the pipeline (nats-server, each supervisor and each worker). At the end: the
publisher stops, the pipeline drains, the stored rows are counted through the exact view, and it prints

- throughput: records/s published and enriched, rows/s written, over the whole run;
- lag over time, one line per sample;
- each process's CPU seconds from the first sample to the last, and the enricher's CPU per record;
- the RSS slope of every process (least-squares line, MB/min) after ``--warmup`` (flat is the goal),
  with the first and last RSS.

    python bench/soak.py [--rate 2000] [--factor 2] [--duration 10m] [--sample 10s] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from enricher_common import cluster_objects, traffic  # type: ignore[import-not-found]

from kubenetmon.cli.natsserver import NatsServer, free_port
from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.options import parse_duration
from kubenetmon.shared.settings import NatsSettings

KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]
PREFIX = "SOAK"
DATA = Path(__file__).resolve().parent.parent / "tests" / "enricher" / "data"
RANGE_FILES = tuple(
    str(DATA / n) for n in ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
)


@dataclass
class Sample:
    t: float
    published: int
    lag: dict[str, tuple[int, int]]
    counters: dict[str, float]
    rss_mb: dict[str, float]
    cpu_s: dict[str, float] = field(default_factory=dict)
    """Each process's CPU seconds so far (user + system)."""


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    published_records: int = 0
    published_messages: int = 0
    late_max_s: float = 0.0
    load_start: list[float] = field(default_factory=lambda: list(os.getloadavg()))


# ------------------------------------------------------------------------------------------ processes


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return 0, ""


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        out += frontier
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (/proc/<pid>/stat), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_name(pid: int, role: str, root: int) -> str:
    if pid == root:
        return role if role == "nats-server" else f"{role} (supervisor)"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmd = ""
    kind = "resource tracker" if "resource_tracker" in cmd else "worker"
    return f"{role} {kind} pid {pid}"


def start_role(role: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([*KUBENETMON, role, *argv], stdout=subprocess.DEVNULL, stderr=err)


def wait_ready(port: int, proc: subprocess.Popen[bytes], *, within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while http_get(port, "/readyz")[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a role did not become ready (exit {proc.poll()})")
        time.sleep(0.1)  # polling a condition, with a deadline


# ------------------------------------------------------------------------------------------ the run


async def publish_on_schedule(
    broker: Broker, pool: list[schema.RawMessage], *, rate: float, until: float, run: Run
) -> None:
    """Publish messages of the pool (fresh ids, current interval) so records/s follow ``rate``."""
    rows = len(pool[0].rows)
    period = rows / rate
    started = time.monotonic()
    k = 0
    while True:
        due = started + k * period
        now = time.monotonic()
        if due >= until:
            return
        if due > now:
            await asyncio.sleep(due - now)
        else:
            run.late_max_s = max(run.late_max_s, now - due)
        base = pool[k % len(pool)]
        start = int(time.time()) // 60 * 60
        msg = schema.RawMessage(base.node, "soak", start, 60, k, 0, 1, base.rows)
        await broker.publish(broker.raw_subject(msg.node), schema.encode_raw(msg), msg_id=msg.msg_id)
        run.published_records += rows
        run.published_messages += 1
        k += 1


async def sample_forever(
    broker: Broker, roots: dict[str, int], ports: dict[str, int], *, every: float, run: Run
) -> None:
    t0 = time.monotonic()
    while True:
        lag = {}
        for consumer in ("enricher", "writer"):
            info = await broker.consumer_info(consumer)
            lag[consumer] = (info.num_pending, info.num_ack_pending)
        counters: dict[str, float] = {}
        for role, port in ports.items():
            _, text = await asyncio.to_thread(http_get, port, "/metrics")
            for name in (
                "kubenetmon_enricher_records_total",
                "kubenetmon_enricher_rows_total",
                "kubenetmon_writer_rows_written_total",
                "kubenetmon_pool_restarts_total",
                "kubenetmon_dlq_messages_total",
            ):
                counters[f"{role}:{name}"] = metric_value(text, name)
        memory: dict[str, float] = {}
        cpu: dict[str, float] = {"publisher (this process)": time.process_time()}
        for role, root in roots.items():
            for pid in descendants(root):
                mb, seconds = rss_mb(pid), cpu_seconds(pid)
                if mb is not None:
                    memory[process_name(pid, role, root)] = mb
                if seconds is not None:
                    cpu[process_name(pid, role, root)] = seconds
        sample = Sample(time.monotonic() - t0, run.published_records, lag, counters, memory, cpu)
        run.samples.append(sample)
        await asyncio.sleep(every)


def count_rows(dsn: str) -> int:
    """Rows through the exact view (asking the writer that owns the chDB directory), -1 on failure."""
    query = "SELECT count() FROM network_flows_0_exact"
    argv = [*KUBENETMON, "sql", "--clickhouse-dsn", dsn, "--format", "csv", query]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return int(done.stdout.splitlines()[-1]) if done.returncode == 0 else -1


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    return float(statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope) * 60


def report(run: Run, args: argparse.Namespace, *, drained_s: float | None, stored: int) -> dict[str, Any]:
    last = run.samples[-1]
    elapsed = args.duration_s
    records_in = last.counters.get("enricher:kubenetmon_enricher_records_total", 0.0)
    rows_out = last.counters.get("enricher:kubenetmon_enricher_rows_total", 0.0)
    rows_written = last.counters.get("writer:kubenetmon_writer_rows_written_total", 0.0)
    rss: dict[str, dict[str, Any]] = {}
    for name in sorted({n for s in run.samples for n in s.rss_mb}):
        points = [(s.t, s.rss_mb[name]) for s in run.samples if name in s.rss_mb]
        steady = [(t, v) for t, v in points if t >= args.warmup_s]
        half = steady[len(steady) // 2 :]
        rss[name] = {
            "first_mb": points[0][1],
            "last_mb": points[-1][1],
            "slope_mb_per_min": slope_mb_per_min(steady),
            "second_half_slope_mb_per_min": slope_mb_per_min(half),
            "samples": len(steady),
            "series": [(round(t, 1), round(v, 1)) for t, v in points],
        }
    # CPU from the first sample (the roles loaded, nothing published yet) to the last (drained)
    first = run.samples[0]
    records = records_in - first.counters.get("enricher:kubenetmon_enricher_records_total", 0.0)
    cpu = {name: last.cpu_s[name] - first.cpu_s.get(name, 0.0) for name in sorted(last.cpu_s)}
    enricher_cpu = sum(v for name, v in cpu.items() if name.startswith("enricher"))
    table: dict[str, dict[str, float]] = {}
    span = last.t - first.t
    for name in sorted({n for s in run.samples for n in s.cpu_s}):
        points = [(s.t, s.cpu_s[name]) for s in run.samples if name in s.cpu_s]
        used = points[-1][1] - points[0][1]
        busiest = max(
            ((b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(points) if b[0] > a[0]), default=0.0
        )
        table[name] = {
            "seconds": round(used, 2),
            "cores": round(used / span, 3) if span > 0 else 0.0,
            "busiest_sample_cores": round(busiest, 3),
            "us_per_record": round(used / max(1.0, records_in) * 1e6, 2),
        }
    return {
        "load_average": {"start": run.load_start, "end": list(os.getloadavg())},
        "cpu": table,
        "cpu_s": cpu,
        "enricher_cpu_us_per_record": enricher_cpu / records * 1e6 if records else None,
        "nominal_records_per_s": args.rate,
        "target_records_per_s": args.rate * args.factor,
        "duration_s": elapsed,
        "published_records": run.published_records,
        "published_records_per_s": run.published_records / elapsed,
        "publisher_late_max_s": run.late_max_s,
        "enriched_records": records_in,
        "enricher_rows_published": rows_out,
        "rows_written": rows_written,
        "rows_stored_exact": stored,
        "drain_s_after_publishing_stopped": drained_s,
        "restarts": {k: v for k, v in last.counters.items() if "restarts" in k},
        "dlq": {k: v for k, v in last.counters.items() if "dlq" in k},
        "lag": [
            {
                "t_s": round(s.t, 1),
                "published": s.published,
                **{f"{c}_pending": p for c, (p, _) in s.lag.items()},
                **{f"{c}_ack_pending": a for c, (_, a) in s.lag.items()},
            }
            for s in run.samples
        ],
        "rss": rss,
    }


def print_report(out: dict[str, Any]) -> None:
    seconds = out["duration_s"]
    factor = out["target_records_per_s"] / out["nominal_records_per_s"]
    lines = [
        f"\nsoak: {seconds:.0f}s at nominal {out['nominal_records_per_s']:,.0f} records/s x {factor:g}",
        f"  published  {out['published_records']:>12,} records  {out['published_records_per_s']:>9,.0f}/s"
        f"  (publisher at most {out['publisher_late_max_s']:.2f}s behind schedule)",
        f"  enriched   {out['enriched_records']:>12,.0f} records  "
        f"{out['enriched_records'] / seconds:>9,.0f}/s",
        f"  written    {out['rows_written']:>12,.0f} rows     {out['rows_written'] / seconds:>9,.0f}/s"
        f"  (exact view: {out['rows_stored_exact']:,}; "
        f"enricher published {out['enricher_rows_published']:,.0f})",
        f"  drained {out['drain_s_after_publishing_stopped']}s after publishing stopped; "
        f"restarts {out['restarts']}; dlq {out['dlq']}",
        "\n  lag (pending / ack pending):",
        f"  {'t (s)':>7} {'published':>11} {'enricher':>15} {'writer':>15}",
    ]
    for row in out["lag"]:
        lines.append(
            f"  {row['t_s']:>7} {row['published']:>11,} "
            f"{row['enricher_pending']:>8,} / {row['enricher_ack_pending']:<5,} "
            f"{row['writer_pending']:>8,} / {row['writer_ack_pending']:<5,}"
        )
    lines.append("\n  CPU seconds from the first sample to the last:")
    for name, seconds in out["cpu_s"].items():
        lines.append(f"  {name:<36} {seconds:>8.1f}")
    per_record = out["enricher_cpu_us_per_record"]
    if per_record is not None:
        lines.append(f"  enricher (all its processes) per record enriched: {per_record:.1f} us")
    lines.append("\n  RSS (MB) over time, one column per minute:")
    for name, r in out["rss"].items():
        minutes: dict[int, float] = {}
        for t, v in r["series"]:
            minutes.setdefault(int(t // 60), v)
        lines.append(f"  {name:<36} " + " ".join(f"{v:>6.0f}" for _, v in sorted(minutes.items())))
    lines.append("\n  RSS (MB): first, last; slope (MB/min) after warm-up, and over its second half")
    for name, r in out["rss"].items():
        lines.append(
            f"  {name:<36} {r['first_mb']:>8.1f} {r['last_mb']:>8.1f} {r['slope_mb_per_min']:>+8.3f} "
            f"{r['second_half_slope_mb_per_min']:>+8.3f}"
        )
    lines.append(
        "\n  CPU from the first to the last sample: seconds, cores (mean, busiest sample),"
        " µs per enriched record"
    )
    for name, c in out["cpu"].items():
        lines.append(
            f"  {name:<36} {c['seconds']:>8.1f} {c['cores']:>6.2f} {c['busiest_sample_cores']:>6.2f}"
            f" {c['us_per_record']:>8.1f}"
        )
    start, end = out["load_average"]["start"], out["load_average"]["end"]
    lines.append(
        f"\n  load average (1, 5, 15 min) at start {start[0]:.1f} {start[1]:.1f} {start[2]:.1f}, "
        f"at end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}"
    )
    print("\n".join(lines))


async def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    objects = cluster_objects(args.pods, args.nodes, args.services)
    inventory = tmp / "inventory.json"
    items = [o for objs in objects.values() for o in objs]
    inventory.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    private = LabelSettings(cloud="aws", region="us-west-2").private
    table = sources.load_table(sources.RangeSettings(sources=RANGE_FILES), private=private)
    pool = traffic(
        table, pods=args.pods, nodes=args.nodes, services=args.services, messages=64, rows=args.rows
    )
    with NatsServer(tmp / "nats") as server:
        settings = NatsSettings(urls=(server.url,), stream_prefix=PREFIX, subject_prefix=PREFIX.lower())
        common = [
            "--nats-url", server.url, "--nats-stream-prefix", PREFIX, "--nats-subject-prefix", PREFIX.lower(),
            "--http-host", "127.0.0.1", "--log-format", "text",
        ]  # fmt: skip
        ports = {"enricher": free_port(), "writer": free_port()}
        writer_argv = [
            *common, "--http-port", str(ports["writer"]), "--workers", str(args.writer_workers),
            "--clickhouse-dsn", f"chdb://{tmp / 'clickhouse'}",
        ]  # fmt: skip
        enricher_argv = [
            *common, "--http-port", str(ports["enricher"]), "--workers", str(args.enricher_workers),
            "--inventory", str(inventory), "--cloud", "aws", "--region", "us-west-2", "--cluster", "soak",
            "--ranges", ",".join(RANGE_FILES),
        ]  # fmt: skip
        async with await Broker.connect(settings, name="soak", wait_s=10) as broker:
            (await broker.ensure_topology()).raise_for_conflicts()
            writer = start_role("writer", writer_argv, tmp / "writer.log")
            enricher = start_role("enricher", enricher_argv, tmp / "enricher.log")
            try:
                for role, proc in (("writer", writer), ("enricher", enricher)):
                    await asyncio.to_thread(wait_ready, ports[role], proc)
                assert server.pid is not None
                roots = {"nats-server": server.pid, "enricher": enricher.pid, "writer": writer.pid}
                run = Run()
                sampler = asyncio.create_task(
                    sample_forever(broker, roots, ports, every=args.sample_s, run=run)
                )
                rate = args.rate * args.factor
                until = time.monotonic() + args.duration_s
                await publish_on_schedule(broker, pool, rate=rate, until=until, run=run)
                stopped = time.monotonic()
                drained_s = None
                while time.monotonic() - stopped < args.drain_wait_s:
                    infos = [await broker.consumer_info(c) for c in ("enricher", "writer")]
                    if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                        drained_s = round(time.monotonic() - stopped, 1)
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(args.sample_s)  # one more sample after the drain
                sampler.cancel()
                stored = await asyncio.to_thread(count_rows, f"chdb://{tmp / 'clickhouse'}")
                return report(run, args, drained_s=drained_s, stored=stored)
            finally:
                for proc in (enricher, writer):
                    proc.terminate()
                for proc in (enricher, writer):
                    try:
                        await asyncio.to_thread(proc.wait, 60)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="nominal records/s")
    parser.add_argument("--factor", type=float, default=2.0, help="multiple of the nominal rate to publish")
    parser.add_argument("--duration", default="10m", help="how long to publish")
    parser.add_argument("--sample", default="10s", help="sampling period of lag and RSS")
    parser.add_argument("--warmup", default="1m", help="samples before this are left out of the RSS slope")
    parser.add_argument(
        "--drain-wait", default="5m", help="longest wait for the pipeline to drain at the end"
    )
    parser.add_argument("--rows", type=int, default=200, help="records per RAW message")
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--enricher-workers", type=int, default=1)
    parser.add_argument("--writer-workers", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the report as JSON here")
    args = parser.parse_args()
    for name in ("duration", "sample", "warmup", "drain_wait"):
        setattr(args, f"{name}_s", parse_duration(getattr(args, name)))
    with tempfile.TemporaryDirectory(prefix="kubenetmon-soak-") as tmp:
        out = asyncio.run(soak(args, Path(tmp)))
    print_report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
