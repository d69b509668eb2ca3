"""Capacity model: the unit costs of every stage, measured in one run, and the sizing they imply.

It reuses the other benchmarks rather than restating them, and measures, ``--runs`` times (medians are
reported, with the spread):

- agent: the real ``kubenetmon agent`` on ``--agent-flows`` conntrack entries (agent_scrape's table,
  default 5 s polls), CPU share and RSS at each size; the cost per 100k tracked flows is the difference
  between the two sizes, scaled to 100k, so the process's fixed cost is left out of it;
- enricher and writer ceilings per process: ``bench/enricher_throughput.py`` (records/s of CPU, no
  network) and ``bench/writer_insert.py`` (rows/s of the writer path into chDB, no network), run as they
  are and their printed medians read;
- the pipeline: ``bench/soak.py``'s run (nats-server, ``kubenetmon enricher`` and ``kubenetmon writer``
  into chDB, synthetic RAW at a fixed rate) for ``--soak-seconds``; meanwhile the CPU seconds of every
  process below each role and of nats-server are sampled with the roles' counters, so CPU per record is
  measured from the first processed record to the drain (start-up cost excluded). Then the stores are
  read: RAW and ENRICHED bytes as JetStream accounts them (per RAW record / per ENRICHED row), and the
  flows table's bytes on disk after ``OPTIMIZE ... FINAL`` (``system.parts``, active parts);
- enricher index memory per pod (tracemalloc of the Kubernetes index of enricher_common's cluster).

Then it prints the sizing table for ``--nodes`` at each ``--flows-per-node`` (tracked flows, each reporting
once per report interval; see ``docs/capacity.md`` for the assumptions). Needs root (network namespaces).

    .venv/bin/python bench/capacity.py [--runs 3] [--flows-per-node 2000,10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import agent_scrape  # type: ignore[import-not-found]
import soak  # type: ignore[import-not-found]
import stream_bytes as on_disk  # type: ignore[import-not-found]
from enricher_common import build_index  # type: ignore[import-not-found]

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink

BENCH = Path(__file__).resolve().parent
DAY = 86_400


# ------------------------------------------------------------------------------------------ agent


def agent_costs(netns: str, flows: int, *, seconds: float, workdir: Path) -> dict[str, float]:
    """CPU share (cores) and RSS (MB) of the real agent polling ``flows`` entries every 5 s."""
    agent_scrape.populate(netns, flows)
    # baseline, same table: what `conntrack -L -o extended` every 5 s would cost
    dump_cpu = statistics.median(agent_scrape.baseline(netns)[0] for _ in range(3))
    with NatsServer(workdir / "nats") as server:
        proc = subprocess.Popen(
            [agent_scrape.KUBENETMON, "agent", "--node-name", "bench", "--netns", netns,
             "--skip-sanity-check", "--state-dir", str(workdir / "state"), "--metrics-port", "-1",
             "--nats-url", server.url, "--poll-interval", "5", "--interval", "60", "--log-level", "warning"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # start-up and the first (cold) poll are not the steady state: wait for two polls' worth
            time.sleep(7)
            cpu0, t0 = agent_scrape.cpu_seconds(proc.pid), time.monotonic()
            rss = []
            while time.monotonic() - t0 < seconds:
                time.sleep(1)
                rss.append(int(agent_scrape.proc_status(proc.pid)["VmRSS"].split()[0]) / 1024)
            share = (agent_scrape.cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            proc.terminate()
            proc.wait(60)
    return {"cpu_cores": share, "rss_mb": statistics.median(rss), "conntrack_l_cores": dump_cpu / 5}


def measure_agent(flows: tuple[int, int], seconds: float) -> dict[str, float]:
    netns = f"kc{os.getpid()}-{secrets.token_hex(3)}"
    agent_scrape.sh("ip", "netns", "add", netns)
    try:
        for path, value in (("nf_conntrack_acct", "1"), ("nf_conntrack_events", "1")):
            agent_scrape.sh("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.netfilter.{path}={value}")
        agent_scrape.sh("ip", "netns", "exec", netns, "nft", "-f", "-", stdin=agent_scrape.RULES)
        out: dict[str, float] = {}
        for n in flows:
            with tempfile.TemporaryDirectory(prefix="kubenetmon-capacity-") as tmp:
                costs = agent_costs(netns, n, seconds=seconds, workdir=Path(tmp))
            out[f"cpu_cores_at_{n}"], out[f"rss_mb_at_{n}"] = costs["cpu_cores"], costs["rss_mb"]
            out[f"baseline_conntrack_l_every_5s_cores_at_{n}"] = costs["conntrack_l_cores"]
    finally:
        subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-F"], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    low, high = flows
    scale = 100_000 / (high - low)
    out["cpu_cores_per_100k"] = (out[f"cpu_cores_at_{high}"] - out[f"cpu_cores_at_{low}"]) * scale
    out["rss_mb_per_100k"] = (out[f"rss_mb_at_{high}"] - out[f"rss_mb_at_{low}"]) * scale
    return out


# ------------------------------------------------------------------------------------------ benches


def run_bench(script: str, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *argv], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"{script} failed: {done.stderr[-2000:]}")
    return done.stdout


def number_after(text: str, label: str) -> float:
    m = re.search(re.escape(label) + r"\s+([\d,]+)", text)
    if m is None:
        raise SystemExit(f"no {label!r} in:\n{text}")
    return float(m.group(1).replace(",", ""))


def measure_ceilings(ranges_dir: str) -> dict[str, float]:
    enricher = run_bench("enricher_throughput.py", "--ranges-dir", ranges_dir, "--runs", "7")
    writer = run_bench("writer_insert.py", "--runs", "3")
    return {
        "enricher_records_per_s_cpu": number_after(enricher, "enricher"),
        "baseline_bare_msgpack_records_per_s_cpu": number_after(enricher, "bare (RAW in, ENRICHED out)"),
        "writer_rows_per_s": number_after(writer, "writer decode + batch path"),
        "baseline_bare_unpack_insert_rows_per_s": number_after(writer, "bare unpack + insert"),
    }


def index_bytes_per_pod(pods: int = 10_000) -> float:
    """Memory of the enricher's Kubernetes index per pod (with the cluster's nodes and services)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    index = build_index(pods, pods // 10, pods // 2)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del index
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / pods


# ------------------------------------------------------------------------------------------ pipeline


def http_text(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def children(role: str) -> tuple[int, int] | None:
    """(pid, http port) of this process's child running ``kubenetmon <role>``."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != me:
            continue
        if role == "nats-server" and argv[0].endswith(b"nats-server"):
            return int(entry), 0
        if role.encode() not in argv:
            continue
        words = [a.decode() for a in argv]
        if "--http-port" in words:
            return int(entry), int(words[words.index("--http-port") + 1])
    return None


def tree_cpu(root: int) -> float:
    total = 0.0
    for pid in soak.descendants(root):
        try:
            total += agent_scrape.cpu_seconds(pid)
        except (OSError, IndexError):
            pass
    return total


async def sample_costs(samples: list[dict[str, float]], *, every: float = 0.5) -> None:
    """CPU of each role's process tree and nats-server, with the roles' counters, until cancelled."""
    roots: dict[str, tuple[int, int]] = {}
    while True:
        for role in ("enricher", "writer", "nats-server"):
            if role not in roots and (found := children(role)):
                roots[role] = found
        texts = [http_text(roots[r][1], "/metrics") for r in ("enricher", "writer") if r in roots]
        if len(roots) == 3 and all(texts):  # both roles up (and not yet stopped)
            enricher = soak.metric_value(texts[0], "kubenetmon_enricher_records_total")
            writer = soak.metric_value(texts[1], "kubenetmon_writer_rows_written_total")
            samples.append(
                {
                    "t": time.monotonic(),
                    "records": enricher,
                    "rows": writer,
                    **{f"cpu_{role}": tree_cpu(pid) for role, (pid, _) in roots.items()},
                }
            )
        await asyncio.sleep(every)


def per_unit(samples: list[dict[str, float]], role: str, counter: str) -> float:
    """CPU seconds of ``role`` per unit of ``counter`` from its last zero to its last value."""
    idle = [s for s in samples if s[counter] == 0]
    if not idle or samples[-1][counter] == 0:
        return float("nan")
    first, last = idle[-1], samples[-1]
    return (last[f"cpu_{role}"] - first[f"cpu_{role}"]) / (last[counter] - first[counter])


async def measure_pipeline(seconds: float, rate: float, tmp: Path) -> dict[str, float]:
    args = argparse.Namespace(
        rate=rate, factor=1.0, duration_s=seconds, sample_s=2.0, warmup_s=0.0, drain_wait_s=300.0,
        rows=200, pods=2000, nodes=100, services=500, enricher_workers=1, writer_workers=1,
    )  # fmt: skip
    samples: list[dict[str, float]] = []
    sampler = asyncio.create_task(sample_costs(samples))
    try:
        report = await soak.soak(args, tmp)
    finally:
        sampler.cancel()
    rss = report["rss"]
    worker_rss = {
        role: max((r["last_mb"] for n, r in rss.items() if n.startswith(f"{role} worker")), default=0.0)
        for role in ("enricher", "writer")
    }
    out: dict[str, float] = {
        "records": report["published_records"],
        "rows_stored": report["rows_stored_exact"],
        "enricher_cpu_s_per_record": per_unit(samples, "enricher", "records"),
        "writer_cpu_s_per_row": per_unit(samples, "writer", "rows"),
        "nats_cpu_s_per_record": per_unit(samples, "nats-server", "records"),
        "enricher_worker_rss_mb": worker_rss["enricher"],
        "writer_worker_rss_mb": worker_rss["writer"],
        "nats_rss_mb": rss.get("nats-server", {}).get("last_mb", 0.0),
    }
    out |= await stream_bytes(tmp / "nats")
    out |= clickhouse_bytes(tmp / "clickhouse")
    out["raw_accounted_bytes_per_record"] = out["raw_bytes"] / out["records"]
    out["enriched_accounted_bytes_per_row"] = out["enriched_bytes"] / out["rows_stored"]
    out["raw_bytes_per_record"] = out["raw_stored_bytes"] / out["records"]
    out["enriched_rows_per_record"] = out["rows_stored"] / out["records"]
    out["enriched_bytes_per_row"] = out["enriched_stored_bytes"] / out["rows_stored"]
    return out


async def stream_bytes(store: Path) -> dict[str, float]:
    """RAW and ENRICHED as JetStream accounts them (messages, bytes), the store restarted read-only."""
    with NatsServer(store) as server:
        settings = NatsSettings(
            urls=(server.url,), stream_prefix=soak.PREFIX, subject_prefix=soak.PREFIX.lower()
        )
        async with await Broker.connect(settings, name="capacity", wait_s=10) as broker:
            raw, enriched = await broker.stream_info("raw"), await broker.stream_info("enriched")
    # stored: on disk, the server stopped (S2 compresses sealed blocks; the last one is estimated at
    # the sealed ones' ratio, see stream_bytes.disk_bytes)
    raw_stored = on_disk.disk_bytes(store, raw.name, raw.bytes)[0]
    enriched_stored = on_disk.disk_bytes(store, enriched.name, enriched.bytes)[0]
    return {
        "raw_stored_bytes": raw_stored,
        "enriched_stored_bytes": enriched_stored,
        "raw_bytes": raw.bytes,
        "raw_messages": raw.messages,
        "enriched_bytes": enriched.bytes,
        "enriched_messages": enriched.messages,
    }


def clickhouse_bytes(directory: Path) -> dict[str, float]:
    """Bytes per row of the flows table after every merge (``OPTIMIZE FINAL``), from ``system.parts``."""
    sink = Sink(ClickHouseSettings(dsn=f"chdb://{directory}", database="kubenetmon", table="network_flows_0"))
    try:
        sink.command("OPTIMIZE TABLE kubenetmon.network_flows_0 FINAL")
        rows, disk, compressed, plain = sink.query(
            "SELECT sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
            "FROM system.parts WHERE active AND database = 'kubenetmon' AND table = 'network_flows_0'"
        ).rows[0]
    finally:
        sink.close()
    return {
        "ch_rows": rows,
        "ch_bytes_per_row": disk / rows,
        "ch_compression": plain / compressed,
    }


# ------------------------------------------------------------------------------------------ model


def sizing(
    unit: dict[str, float], *, nodes: int, flows_per_node: int, args: argparse.Namespace
) -> dict[str, Any]:
    """What ``nodes`` nodes need, from the measured unit costs (see docs/capacity.md)."""
    records_s = nodes * flows_per_node / args.interval
    rows_s = records_s * unit["enriched_rows_per_record"]
    enricher_cores = records_s * unit["enricher_cpu_s_per_record"] / args.utilisation
    writer_cores = rows_s * unit["writer_cpu_s_per_row"] / args.utilisation
    enrichers, writers = max(1, math.ceil(enricher_cores)), max(1, math.ceil(writer_cores))
    pods = nodes * args.pods_per_node
    enricher_mb = unit["enricher_worker_rss_mb"] + pods * unit["index_bytes_per_pod"] / 2**20
    return {
        "nodes": nodes,
        "records_per_s": records_s,
        "rows_per_s": rows_s,
        "enricher_processes": enrichers,
        "enricher_cores": enricher_cores,
        "enricher_memory_gb": enrichers * enricher_mb / 1024,
        "writer_processes": writers,
        "writer_cores": writer_cores,
        "writer_memory_gb": writers * unit["writer_worker_rss_mb"] / 1024,
        "agent_cores_per_node": agent_at(unit, "cpu_cores", flows_per_node),
        "agent_rss_mb_per_node": agent_at(unit, "rss_mb", flows_per_node),
        "nats_cores": records_s * unit["nats_cpu_s_per_record"] / args.utilisation,
        **nats_storage(unit, records_s=records_s, args=args),
        "clickhouse_gb_per_day": rows_s * DAY * unit["ch_bytes_per_row"] / 1e9,
        "watches_per_enricher_process": enrichers * 3,
        "watches_with_metadata_role": 3,
    }


def nats_storage(unit: dict[str, float], *, records_s: float, args: argparse.Namespace) -> dict[str, float]:
    """What JetStream writes a day and keeps at the retention, GB, one replica (bytes as stored on disk)."""
    raw_day = records_s * DAY * unit["raw_bytes_per_record"]
    enriched_day = records_s * unit["enriched_rows_per_record"] * DAY * unit["enriched_bytes_per_row"]
    return {
        "nats_gb_per_day": (raw_day + enriched_day) / 1e9,
        "nats_raw_gb_retained": raw_day * args.raw_days / 1e9,
        "nats_enriched_gb_retained": enriched_day * args.enriched_days / 1e9,
        "nats_gb_retained": (raw_day * args.raw_days + enriched_day * args.enriched_days) / 1e9,
    }


def storage_only(args: argparse.Namespace) -> None:
    """The NATS columns of the sizing from given stored bytes (``bench/stream_bytes.py``'s), no measuring."""
    raw, enriched, rows_per_record = (float(x) for x in args.storage.split(","))
    unit = {"raw_bytes_per_record": raw, "enriched_bytes_per_row": enriched,
            "enriched_rows_per_record": rows_per_record}  # fmt: skip
    print(f"RAW {raw} B/record, ENRICHED {enriched} B/row, {rows_per_record} rows/record; "
          f"retention RAW {args.raw_days:g} d, ENRICHED {args.enriched_days:g} d, one replica")  # fmt: skip
    for flows in (int(f) for f in args.flows_per_node.split(",")):
        for n in args.nodes.split(","):
            records_s = int(n) * flows / args.interval
            row = nats_storage(unit, records_s=records_s, args=args)
            print(f"  {n} nodes x {flows} flows ({records_s:,.0f} records/s): "
                  + ", ".join(f"{k}={v:,.1f}" for k, v in row.items()))  # fmt: skip


def agent_at(unit: dict[str, float], what: str, flows: int) -> float:
    """The agent's cost at ``flows`` tracked flows, on the line through the two measured sizes."""
    low = min(int(k.rsplit("_", 1)[1]) for k in unit if k.startswith(f"agent_{what}_at_"))
    return unit[f"agent_{what}_at_{low}"] + unit[f"agent_{what}_per_100k"] * (flows - low) / 100_000


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in runs[0] if all(isinstance(r.get(k), (int, float)) for r in runs)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported")
    parser.add_argument("--agent-flows", default="50000,150000", help="two conntrack table sizes")
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--soak-rate", type=float, default=4000.0, help="RAW records/s of the pipeline run")
    parser.add_argument(
        "--ranges-dir",
        default=os.environ.get(
            "KUBENETMON_BENCH_RANGES_DIR", str(BENCH.parent / "tests" / "enricher" / "data")
        ),
    )
    parser.add_argument(
        "--flows-per-node",
        default="2000,10000",
        help="tracked flows per node (comma-separated: one table each)",
    )
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--interval", type=float, default=60.0, help="the agents' report interval, s")
    parser.add_argument("--utilisation", type=float, default=0.6, help="target CPU use of a process")
    parser.add_argument(
        "--raw-days", type=float, default=7.0, help="RAW retention (default --nats-raw-max-age)"
    )
    parser.add_argument("--enriched-days", type=float, default=2.0, help="ENRICHED retention (the default)")
    parser.add_argument("--nodes", default="100,1000,5000")
    parser.add_argument("--json", default="", help="also write every run and the medians here")
    parser.add_argument(
        "--storage",
        default="",
        metavar="RAW_B,ENRICHED_B,ROWS_PER_RECORD",
        help="measure nothing: print NATS per day and retained from these stored bytes (stream_bytes.py)",
    )
    args = parser.parse_args()
    if args.storage:
        storage_only(args)
        return
    low, high = (int(n) for n in args.agent_flows.split(","))

    runs: list[dict[str, float]] = []
    for i in range(args.runs):
        unit: dict[str, float] = {}
        unit |= {f"agent_{k}": v for k, v in measure_agent((low, high), args.agent_seconds).items()}
        unit |= measure_ceilings(args.ranges_dir)
        unit["enricher_ratio_to_bare"] = (
            unit["enricher_records_per_s_cpu"] / unit["baseline_bare_msgpack_records_per_s_cpu"]
        )
        unit["writer_ratio_to_bare"] = (
            unit["writer_rows_per_s"] / unit["baseline_bare_unpack_insert_rows_per_s"]
        )
        with tempfile.TemporaryDirectory(prefix="kubenetmon-capacity-") as tmp:
            unit |= asyncio.run(measure_pipeline(args.soak_seconds, args.soak_rate, Path(tmp)))
        unit["index_bytes_per_pod"] = index_bytes_per_pod()
        runs.append(unit)
        print(
            f"run {i + 1}/{args.runs}: " + json.dumps({k: round(v, 9) for k, v in unit.items()}), flush=True
        )
    unit = median_of(runs)
    print("\nunit costs, median of", len(runs), "runs (min..max):")
    for key, value in unit.items():
        values = [r[key] for r in runs]
        print(f"  {key:<34} {value:>16.6g}   ({min(values):.6g}..{max(values):.6g})")
    table = []
    for flows in (int(f) for f in args.flows_per_node.split(",")):
        print(f"\nsizing at {flows} flows per node, each reporting once per {args.interval:g}s interval:")
        for n in args.nodes.split(","):
            row = sizing(unit, nodes=int(n), flows_per_node=flows, args=args)
            table.append({"flows_per_node": flows, **row})
            print(
                "  "
                + ", ".join(f"{k}={v:,.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": unit, "sizing": table}, indent=2))


if __name__ == "__main__":
    main()
