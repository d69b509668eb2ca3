"""Lookup cost and memory of the enricher's two tables: the cloud range table and the Kubernetes index.

- Range table (the real ~50k-prefix provider files): ns per ``lookup`` of random public IPv4, IPv4
  inside provider ranges, private IPv4 and IPv6, next to the cost of a bare ``dict.get`` on the same
  packed addresses (the cheapest lookup Python has), in the same run.
- Index at 1x, 5x and 10x of a base size (default 1k pods / 100 nodes / 500 services, so 10x is the
  10k / 1k / 5k cluster): bytes per object (tracemalloc), ns per ``pod_at`` and per labelled record.
  Flat means the columns do not grow with the cluster.

    python bench/enricher_index.py --ranges-dir DIR
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import random
import time
import tracemalloc

from enricher_common import SETTINGS, build_index, load_ranges, pod_ip, traffic

from kubenetmon.enricher.labeler import Labeler


def per_call_ns(fn: object, items: list[bytes], runs: int) -> float:
    call = fn  # local for the loop
    times = []
    for _ in range(runs):
        started = time.process_time()
        for item in items:
            call(item)  # type: ignore[operator]
        times.append(time.process_time() - started)
    return sorted(times)[len(times) // 2] / len(items) * 1e9


def main() -> None:
    from enricher_common import arguments

    parser = arguments(__doc__ or "")
    parser.set_defaults(pods=1000, nodes=100, services=500)
    args = parser.parse_args()
    table, files = load_ranges(args.ranges_dir)
    print(f"range table: {table.prefixes} prefixes from {len(files)} files -> {table.segments} segments")
    rnd = random.Random(7)
    public = [rnd.getrandbits(32).to_bytes(4, "big") for _ in range(100_000)]
    inside = [
        a for a in (rnd.getrandbits(32).to_bytes(4, "big") for _ in range(2_000_000)) if table.lookup(a)
    ]
    inside = [a for a in inside if not table.lookup(a).private][:100_000]  # type: ignore[union-attr]
    private = [ipaddress.IPv4Address(0x0A000000 + rnd.getrandbits(24)).packed for _ in range(100_000)]
    v6 = [bytes([0x26, 0x00]) + rnd.getrandbits(112).to_bytes(14, "big") for _ in range(100_000)]
    baseline = dict.fromkeys(public[:50_000], 1)
    print(f"  bare dict.get (baseline)        {per_call_ns(baseline.get, public, args.runs):6.0f} ns")
    for name, items in (
        ("random IPv4", public),
        ("IPv4 in ranges", inside),
        ("private IPv4", private),
        ("IPv6 2600::/16", v6),
    ):
        print(f"  lookup {name:<24} {per_call_ns(table.lookup, items, args.runs):6.0f} ns")

    print("index (pods/nodes/services): bytes per pod (all kinds), ns per pod_at, us per labelled record")
    for scale in (1, 5, 10):
        pods, nodes, services = args.pods * scale, args.nodes * scale, args.services * scale
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        index = build_index(pods, nodes, services)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        size = sum(s.size_diff for s in after.compare_to(before, "filename"))
        ips = [ipaddress.IPv4Address(pod_ip(rnd.randrange(pods))).packed for _ in range(100_000)]
        pod_at = functools.partial(index.pod_at, start=1_700_000_000, end=1_700_000_060)
        lookup = per_call_ns(pod_at, ips, args.runs)
        labeler = Labeler(SETTINGS, index=index, ranges=table)
        msgs = traffic(table, pods=pods, nodes=nodes, services=services, messages=20, rows=500, seed=scale)
        records = sum(len(m.rows) for m in msgs)
        times = []
        for _ in range(args.runs):
            started = time.process_time()
            for m in msgs:
                labeler.label(m, enriched_at=0)
            times.append(time.process_time() - started)
        label_us = sorted(times)[len(times) // 2] / records * 1e6
        print(
            f"  {pods:>6}/{nodes:>5}/{services:>6}: {size / pods:7.0f} B/pod  {lookup:5.0f} ns pod_at"
            f"  {label_us:5.2f} us/record  ({size / 2**20:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
