"""Enricher records/s per process, side by side with a bare msgpack decode + encode of the same messages.

One process, one run, interleaved rounds:

- ``enricher``: what a worker does per RAW delivery minus the network: strict ``decode_raw``, label
  (10k-pod index, the real range table), metrics, ENRICHED encode (``Enricher.enrich``);
- ``bare (RAW in, ENRICHED out)``: ``msgpack.unpackb`` of each RAW message plus ``msgpack.packb`` of the
  ENRICHED payload the enricher produced for it (unpacked, so plain lists): the same bytes, serialised
  the plain way (``encode_enriched`` writes exactly these bytes, checked below). The enricher writes
  layout v2 (each distinct value and run once), whose plain map is much smaller than v1's;
- ``bare (RAW in, ENRICHED v1 out)``: the same with the v1 payload of the same rows (one plain array
  per column, every cell): the baseline as it was measured before v2.
- ``bare (RAW in, RAW out)``: ``msgpack.unpackb`` + ``msgpack.packb`` of the RAW message itself.

Ratios are baseline time / enricher time (1.0: as fast as the bare serialisation): the median over
rounds of each round's ratio (both measured back to back, so load elsewhere on the machine hits both),
next to the ratio of the median times.

    python bench/enricher_throughput.py --ranges-dir DIR [--messages 100 --rows 500 --runs 15]
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import msgpack
from enricher_common import OBSERVER, SETTINGS, arguments, build_index, load_ranges, median_seconds, traffic

from kubenetmon.cli.lab.objects import T0
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared import schema
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.settings import NatsSettings

try:  # the checks cost is measured against the code before them (same script, older checkout)
    from kubenetmon.enricher.plausible import Bounds
except ImportError:
    Bounds = None  # type: ignore[assignment,misc]


class _Subjects:
    """What ``Enricher.enrich`` asks of a broker: subject names and the payload bound (no connection)."""

    settings = NatsSettings()
    max_payload = 8 * 1024 * 1024

    def enriched_subject(self, node: str) -> str:
        return f"kubenetmon.enriched.{node}"


class _NoSettle:
    async def ack(self) -> None: ...
    async def nak(self, delay: float | None) -> None: ...
    async def in_progress(self) -> None: ...
    async def term(self) -> None: ...


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rows", type=int, default=500, help="records per RAW message")
    parser.set_defaults(runs=15)
    args = parser.parse_args()

    table, files = load_ranges(args.ranges_dir)
    started = time.perf_counter()
    index = build_index(args.pods, args.nodes, args.services)
    print(f"index: {index.sizes()} built in {time.perf_counter() - started:.2f}s")
    print(f"range table: {table.prefixes} prefixes from {len(files)} files, {table.segments} segments")
    msgs = traffic(
        table,
        pods=args.pods,
        nodes=args.nodes,
        services=args.services,
        messages=args.messages,
        rows=args.rows,
    )
    raws = [schema.encode_raw(m) for m in msgs]
    subject = f"kubenetmon.raw.{OBSERVER}"
    deliveries = [
        Delivery(_NoSettle(), data=raw, subject=subject, headers={}, msg_id=m.msg_id, num_delivered=1,
                 stream="RAW", consumer="enricher", stream_seq=i + 1, timestamp=0.0, pending=0)
        for i, (m, raw) in enumerate(zip(msgs, raws, strict=True))
    ]  # fmt: skip
    labeler = Labeler(SETTINGS, index=index, ranges=table)
    checks: dict[str, Any] = {} if Bounds is None else {"bounds": Bounds()}  # the plausibility checks on
    clock = lambda: (T0 + 86400) * 10**9  # noqa: E731 (a day after the messages: none expired or ahead)
    enricher = Enricher(labeler, broker=_Subjects(), max_rows=10**9, clock=clock, **checks)  # type: ignore[arg-type]
    print(f"plausibility checks: {'on' if checks else 'absent'}")
    outputs = [enricher.enrich(d) for d in deliveries]
    # per RAW message, every ENRICHED payload it gave (the flows' parts, and the node rows' own)
    enriched_payloads = [[msgpack.unpackb(payload) for _, payload, _ in out] for out in outputs]
    v1_payloads = [
        [
            msgpack.unpackb(schema.encode_enriched(schema.decode_enriched(payload), version=1))
            for _, payload, _ in out
        ]
        for out in outputs
    ]
    same = all(
        msgpack.packb(plain) == payload
        for plains, out in zip(enriched_payloads, outputs, strict=True)
        for plain, (_, payload, _) in zip(plains, out, strict=True)
    )
    print(f"ENRICHED payloads byte for byte what msgpack.packb writes for the same values: {same}")
    records = sum(len(m.rows) for m in msgs)
    rows = sum(len(p["data"][0]) for ps in v1_payloads for p in ps)
    print(
        f"{len(msgs)} RAW messages, {records} records -> {rows} rows ({1 - rows / 2 / records:.0%} dropped)"
    )
    out_bytes = sum(len(p) for o in outputs for _, p, _ in o)
    print(f"RAW {sum(map(len, raws)) / records:.0f} B/record, ENRICHED {out_bytes / records:.0f} B/record")

    def run_enricher() -> None:
        for d in deliveries:
            enricher.enrich(d)

    def run_bare_out() -> None:
        for raw, payloads in zip(raws, enriched_payloads, strict=True):
            msgpack.unpackb(raw)
            for payload in payloads:
                msgpack.packb(payload)

    def run_bare_v1() -> None:
        for raw, payloads in zip(raws, v1_payloads, strict=True):
            msgpack.unpackb(raw)
            for payload in payloads:
                msgpack.packb(payload)

    def run_bare_raw() -> None:
        for raw in raws:
            msgpack.packb(msgpack.unpackb(raw))

    gc.collect()  # no gc.freeze(): the workers do not freeze their index either
    results: dict[str, list[float]] = {"enricher": [], "bare_out": [], "bare_v1": [], "bare_raw": []}
    for _ in range(args.runs):
        results["enricher"].append(median_seconds(run_enricher, 1))
        results["bare_out"].append(median_seconds(run_bare_out, 1))
        results["bare_v1"].append(median_seconds(run_bare_v1, 1))
        results["bare_raw"].append(median_seconds(run_bare_raw, 1))
    report(results, records)


def report(results: dict[str, list[float]], records: int) -> None:
    med = {k: statistics.median(v) for k, v in results.items()}
    us = med["enricher"] / records * 1e6
    print(f"{'enricher':<30}{records / med['enricher']:>12,.0f} records/s  ({us:.2f} us/record, CPU)")
    labels = (
        ("bare_out", "bare (RAW in, ENRICHED out)"),
        ("bare_v1", "bare (RAW in, ENRICHED v1 out)"),
        ("bare_raw", "bare (RAW in, RAW out)"),
    )
    for key, label in labels:
        paired = statistics.median(b / e for b, e in zip(results[key], results["enricher"], strict=True))
        print(
            f"{label:<30}{records / med[key]:>12,.0f} records/s  ratio {paired:.2f} "
            f"(of medians {med[key] / med['enricher']:.2f})"
        )


if __name__ == "__main__":
    main()
