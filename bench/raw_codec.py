"""CPU of the RAW codec, layout v1 (a msgpack array per row) against v2 (a binary per field, byte planes).

- agent: ``encode_raw`` of a report's rows (what ``reports.build`` does per chunk), from ``RawRow`` lists;
- enricher: the strict ``decode_raw`` of the payload and its columns and identities (what a worker reads
  before labelling).

The records are ``enricher_common``'s node-0 traffic, ``--messages`` messages of ``--rows`` records
(``--sorted``: rows in the agent's order, sorted by flow tuple; ``--random-ports``: source ports drawn
from the ephemeral range instead of the traffic's consecutive ones). CPU seconds of this process
(``time.process_time``), v1 and v2 alternating inside each run; per run the best of ``--repeat``
passes; ``--runs`` runs, medians with every run listed.

``--store``: also the bytes per record each layout takes in a real nats-server's S2 stream, as stored on
disk (``stream_bytes.py``'s method: three runs; give it enough records to seal several blocks, e.g.
``--messages 520 --rows 2000 --sorted``, the agent's messages at 2,000 flows per node).

    python bench/raw_codec.py --ranges-dir DIR [--messages 200 --rows 200 --runs 5] [--sorted] [--store]
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stream_bytes
from enricher_common import arguments, load_ranges, traffic

from kubenetmon.shared import schema
from kubenetmon.shared.schema import RawMessage


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rows", type=int, default=200, help="records per RAW message")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sorted", action="store_true", help="rows sorted by flow tuple, as the agent sends")
    parser.add_argument("--store", action="store_true", help="also bytes on disk in an S2 stream")
    parser.add_argument(
        "--random-ports",
        action="store_true",
        help="ephemeral source ports, not consecutive ones",
    )
    parser.set_defaults(runs=5)
    args = parser.parse_args()
    table, _ = load_ranges(args.ranges_dir)
    msgs = traffic(table, pods=args.pods, nodes=args.nodes, services=args.services,
                   messages=args.messages, rows=args.rows)  # fmt: skip
    if args.random_ports:
        rnd = random.Random(7)
        msgs = [RawMessage(m.node, m.boot, m.start, m.seconds, m.seq, m.chunk, m.chunks,
                           [r._replace(orig_sport=p, reply_dport=p) for r in m.rows
                            for p in (rnd.randint(32768, 60999),)])
                for m in msgs]  # fmt: skip
    if args.sorted:
        msgs = [RawMessage(m.node, m.boot, m.start, m.seconds, m.seq, m.chunk, m.chunks, sorted(m.rows))
                for m in msgs]  # fmt: skip
    groups = [(m, list(m.rows)) for m in msgs]
    records = sum(len(rows) for _, rows in groups)
    payloads = {v: [schema.encode_raw(m, version=v) for m in msgs] for v in (1, 2)}
    for v in (1, 2):
        assert [schema.decode_raw(p) for p in payloads[v]] == msgs

    def encode(version: int) -> None:
        for m, rows in groups:  # a fresh message from the rows, as the agent builds each chunk
            schema.encode_raw(
                RawMessage(m.node, m.boot, m.start, m.seconds, m.seq, m.chunk, m.chunks, rows),
                version=version,
            )

    def decode(version: int) -> None:
        for p in payloads[version]:
            msg = schema.decode_raw(p)
            msg.columns()
            msg.identities()

    print(f"{len(msgs)} messages of {args.rows} records{' (sorted)' if args.sorted else ''}; "
          f"payload v1 {sum(map(len, payloads[1])) / records:.1f} B/record, "
          f"v2 {sum(map(len, payloads[2])) / records:.1f}; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    results: dict[str, list[float]] = {k: [] for k in ("encode v1", "encode v2", "decode v1", "decode v2")}
    for run in range(args.runs):
        order = (1, 2) if run % 2 == 0 else (2, 1)
        for v in order:
            results[f"encode v{v}"].append(best(lambda v=v: encode(v), args.repeat) / records * 1e6)  # type: ignore[misc]
        for v in order:
            results[f"decode v{v}"].append(best(lambda v=v: decode(v), args.repeat) / records * 1e6)  # type: ignore[misc]
    for name, values in results.items():
        print(
            f"{name}: {statistics.median(values):.3f} us CPU/record ({', '.join(f'{x:.3f}' for x in values)})"
        )
    for what in ("encode", "decode"):
        ratios = [b / a for a, b in zip(results[f"{what} v1"], results[f"{what} v2"], strict=True)]
        print(f"{what} v2/v1 paired: median {statistics.median(ratios):.2f} "
              f"({', '.join(f'{r:.2f}' for r in ratios)}); load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if args.store:
        store(payloads, records)


def store(payloads: dict[int, list[bytes]], records: int) -> None:
    kinds = {
        f"RAW_V{v}_S2": ("s2", [(f"m{i}", p) for i, p in enumerate(data)]) for v, data in payloads.items()
    }
    with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
        runs = [stream_bytes.one_run(r, kinds, Path(tmp)) for r in range(3)]
    for name in kinds:
        stored = [r[name]["stored"] / records for r in runs]
        print(f"{name}: accounted {runs[0][name]['accounted'] / records:.1f} B/record, on disk "
              f"{statistics.median(stored):.1f} ({', '.join(f'{x:.1f}' for x in stored)}), "
              f"{runs[0][name]['blocks']} blocks")  # fmt: skip


if __name__ == "__main__":
    main()
