"""Shared pieces of the enricher benchmarks: a synthetic cluster, RAW traffic, the real range table.

The range files are the providers' published JSON (AWS ip-ranges.json, GCP cloud.json, Azure Service
Tags, ...); give their directory with ``--ranges-dir`` or ``KUBENETMON_BENCH_RANGES_DIR``. Without
them the benchmarks still run, on an almost empty table (and say so).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubenetmon.cli.lab.objects import T0, node, pod, service
from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.shared.schema import RawMessage, RawRow

SETTINGS = LabelSettings(cloud="aws", region="us-west-2", cluster="bench", environment="bench")
OBSERVER = "node-0"


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--ranges-dir",
        default=os.environ.get("KUBENETMON_BENCH_RANGES_DIR", ""),
        help="directory of provider range JSON files (env KUBENETMON_BENCH_RANGES_DIR)",
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--services", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=7, help="rounds; medians are reported")
    return parser


def range_files(directory: str) -> tuple[str, ...]:
    if not directory:
        return ()
    return tuple(sorted(str(p) for p in Path(directory).glob("*.json")))


def load_ranges(directory: str) -> tuple[PrefixTable[Range], tuple[str, ...]]:
    files = range_files(directory)
    if not files:
        print("note: no --ranges-dir: the range table holds only the private ranges", file=sys.stderr)
    table = sources.load_table(sources.RangeSettings(sources=files), private=SETTINGS.private)
    return table, files


def pod_ip(i: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + 0x10000 + i))  # 10.1.0.0 + i


def cluster_objects(pods: int, nodes: int, services: int) -> dict[str, list[dict[str, Any]]]:
    """Pods spread over nodes (pod i on node i % nodes), Deployments of 10, Services over them."""
    zones = ("us-west-2a", "us-west-2b", "us-west-2c")
    return {
        "nodes": [
            node(
                f"node-{i}",
                str(ipaddress.IPv4Address(0xC0A80000 + i)),
                zone=zones[i % 3],
                provider_id=f"aws:///{zones[i % 3]}/i-{i:017x}",
            )
            for i in range(nodes)
        ],
        "pods": [
            pod(
                f"app{i // 10}-5d8f7c9b6d-{i:05d}",
                pod_ip(i),
                node=f"node-{i % nodes}",
                namespace=f"ns{i % 40}",
                labels={"app.kubernetes.io/name": f"app{i // 10}", "pod-template-hash": "5d8f7c9b6d"},
                owner=("ReplicaSet", f"app{i // 10}-5d8f7c9b6d"),
                created=T0 - 86400,
            )
            for i in range(pods)
        ],
        "services": [
            service(f"svc{i}", str(ipaddress.IPv4Address(0x0A600000 + i)), namespace=f"ns{i % 40}")
            for i in range(services)
        ],
    }


def build_index(pods: int, nodes: int, services: int) -> Index:
    index = Index()
    for kind, objs in cluster_objects(pods, nodes, services).items():
        index.replace(kind, objs, now=T0)
    return index


def _public_addresses(table: PrefixTable[Range], rnd: random.Random, count: int) -> list[bytes]:
    out = []
    while len(out) < count:
        addr = rnd.getrandbits(32).to_bytes(4, "big")
        hit = table.lookup(addr)
        if hit is None or not hit.private:
            out.append(addr)
    return out


def traffic(
    table: PrefixTable[Range],
    *,
    pods: int,
    nodes: int,
    services: int,
    messages: int,
    rows: int,
    seed: int = 1,
) -> list[RawMessage]:
    """What node-0 reports: 35% via a Service to a pod elsewhere, 20% pod to pod, 30% to public/cloud
    addresses, 10% inbound from pods elsewhere, 5% node flows (dropped)."""
    rnd = random.Random(seed)
    local = [i for i in range(pods) if i % nodes == 0]
    remote_pool = [ipaddress.IPv4Address(pod_ip(i)).packed for i in range(pods) if i % nodes != 0]
    public = _public_addresses(table, rnd, 2000)
    node_ip = ipaddress.IPv4Address(0xC0A80000).packed
    out = []
    for m in range(messages):
        batch = []
        for r in range(rows):
            me = ipaddress.IPv4Address(pod_ip(rnd.choice(local))).packed
            port = 20000 + r
            roll = rnd.random()
            counters = (
                rnd.randint(1, 100),
                rnd.randint(60, 1_000_000),
                rnd.randint(1, 100),
                rnd.randint(60, 1_000_000),
            )
            if roll < 0.35:
                vip = ipaddress.IPv4Address(0x0A600000 + rnd.randrange(services)).packed
                peer = rnd.choice(remote_pool)
                row = (6, 2, 0, me, vip, port, 80, peer, me, 8080, port)
            elif roll < 0.55:
                peer = rnd.choice(remote_pool)
                row = (6, 2, 0, me, peer, port, 9000, peer, me, 9000, port)
            elif roll < 0.85:
                peer = rnd.choice(public)
                row = (6, 2, 0, me, peer, port, 443, peer, node_ip, 443, port)
            elif roll < 0.95:
                peer = rnd.choice(remote_pool)
                row = (6, 2, 0, peer, me, port, 8080, me, peer, 8080, port)
            else:
                row = (6, 2, 0, node_ip, me, port, 10250, me, node_ip, 10250, port)
            batch.append(RawRow(*row, *counters))
        out.append(
            RawMessage(
                node=OBSERVER,
                boot="bench",
                start=T0 - T0 % 60 + 60 * m,  # aligned, as an agent's are
                seconds=60,
                seq=0,
                chunk=0,
                chunks=1,
                rows=batch,
            )
        )
    return out  # fmt: skip


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median CPU seconds of this process (other load on the machine does not count) over ``runs``."""
    times = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return statistics.median(times)
