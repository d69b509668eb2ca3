"""``kubenetmon label``: label RAW records offline, exactly as the enricher would, to debug attribution.

Reads records as JSON lines on stdin (the keys of ``kubenetmon conntrack dump --format json``:
``proto``, ``family``, ``zone``, ``orig_src`` ... ``reply_bytes``, addresses as text, proto/family as
numbers or names; optional ``interval_start`` and ``interval_seconds``), builds RAW messages of the
observer ``--node``, and labels them with the enricher's own ``Labeler`` against an index filled from
``--inventory`` and the same range sources. Rows go to stdout as JSON lines keyed by the ClickHouse
column names (each record's ``out`` row, then its ``in`` row); dropped records go to stderr with
their reason, and so do lines that are not valid records (the exit status is then 1).

It must not have a labeling path of its own: everything between the RAW message and the columns is
``Labeler.label``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.settings import add_label_arguments, label_options
from kubenetmon.shared import exits, schema
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import add_arguments, option

BATCH: Final = 1000
_PROTOS: Final = {"tcp": 6, "udp": 17, "sctp": 132}
_FAMILIES: Final = {"ipv4": 2, "inet": 2, "4": 2, "2": 2, "ipv6": 10, "inet6": 10, "6": 10, "10": 10}
_COUNTERS: Final = ("orig_packets", "orig_bytes", "reply_packets", "reply_bytes")
_PORTS: Final = ("orig_sport", "orig_dport", "reply_sport", "reply_dport")


@dataclass(frozen=True)
class LabelToolFlags:
    """The flags of ``label`` besides the labeling ones."""

    node: str | None = option(
        None,
        flag="--node",
        metavar="NAME",
        native=True,
        required=True,
        help="the observer: node whose agent saw the records",
    )
    interval_seconds: int = option(
        60,
        flag="--interval-seconds",
        metavar="SECONDS",
        kind="int",
        native=True,
        help="interval length for records without interval_seconds",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, LabelToolFlags, title=None)
    add_label_arguments(parser)


def main(args: argparse.Namespace) -> int:
    options = label_options(args)
    if not options.inventory:
        raise ConfigError("--inventory FILE is required (kubectl get pods,nodes,services -A -o yaml)")
    settings = options.label()
    index = Index(grace_seconds=options.pod_grace_s)
    inventory.load(index, options.inventory)
    report = sources.LoadReport()
    table = sources.load_table(options.range_sources(), private=settings.private, report=report)
    for source, why in report.failed.items():
        print(f"warning: range source {source} skipped: {why}", file=sys.stderr)
    labeler = Labeler(settings, index=index, ranges=table)
    return run(labeler, sys.stdin, sys.stdout, sys.stderr, node=args.node, seconds=args.interval_seconds)


def run(
    labeler: Labeler, lines: Iterable[str], out: IO[str], err: IO[str], *, node: str, seconds: int
) -> int:
    """Label every record of ``lines``; returns 1 if some lines were not valid records."""
    invalid = 0

    def bad(number: int, why: str) -> None:
        nonlocal invalid
        invalid += 1
        print(json.dumps({"line": number, "invalid": why}), file=err)

    for msg, numbers in _messages(lines, node=node, seconds=seconds, bad=bad):

        def dropped(i: int, row: schema.RawRow, reason: str, numbers: list[int] = numbers) -> None:
            print(json.dumps({"line": numbers[i], "dropped": reason}), file=err)

        result = labeler.label(msg, enriched_at=time.time_ns(), on_drop=dropped)
        n = result.stats.rows // 2
        for j in (j for pair in zip(range(n), range(n, 2 * n), strict=True) for j in pair):
            out.write(
                json.dumps({c: _render(c, v[j]) for c, v in zip(result.columns, result.data, strict=True)})
            )
            out.write("\n")
        if result.nodes is not None:  # node rows: the observer's own node's flows, for the node table
            names, data = result.nodes
            for j in range(len(data[0])):
                out.write(json.dumps({c: _render(c, v[j]) for c, v in zip(names, data, strict=True)}) + "\n")
    return exits.FAILED if invalid else exits.DONE


def _messages(
    lines: Iterable[str], *, node: str, seconds: int, bad: Callable[[int, str], None]
) -> Iterator[tuple[schema.RawMessage, list[int]]]:
    """RAW messages of up to ``BATCH`` consecutive records of one interval, with their line numbers."""
    now = int(time.time())
    rows: list[schema.RawRow] = []
    numbers: list[int] = []
    key: tuple[int, int] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            secs = int(record.get("interval_seconds") or seconds)
            start = int(record.get("interval_start") or now - now % secs)
            row = parse_record(record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            bad(number, f"{type(exc).__name__}: {exc}")
            continue
        if rows and (key != (start, secs) or len(rows) >= BATCH):
            yield _message(rows, node=node, key=key), numbers
            rows, numbers = [], []
        key = (start, secs)
        rows.append(row)
        numbers.append(number)
    if rows:
        yield _message(rows, node=node, key=key), numbers


def _message(rows: list[schema.RawRow], *, node: str, key: tuple[int, int] | None) -> schema.RawMessage:
    start, secs = key or (0, 60)
    return schema.RawMessage(
        node=node, boot="label", start=start, seconds=secs, seq=0, chunk=0, chunks=1, rows=rows
    )


def parse_record(record: dict[str, Any]) -> schema.RawRow:
    """One conntrack dump JSON record -> a RAW row (addresses packed, names accepted for proto/family)."""
    addrs = [ipaddress.ip_address(record[k]) for k in ("orig_src", "orig_dst", "reply_src", "reply_dst")]
    proto = record["proto"]
    proto = _PROTOS[proto.lower()] if isinstance(proto, str) and not proto.isdigit() else int(proto)
    family = record.get("family", 10 if addrs[0].version == 6 else 2)
    family = _FAMILIES[str(family).lower()]
    if {a.version for a in addrs} != {4 if family == 2 else 6}:
        raise ValueError(f"addresses do not match family {record.get('family')!r}")
    osrc, odst, rsrc, rdst = (a.packed for a in addrs)
    n = {k: int(record.get(k) or 0) for k in ("zone", *_PORTS, *_COUNTERS)}
    limits = [
        (proto, 255),
        (n["zone"], 0xFFFF),
        *((n[k], 0xFFFF) for k in _PORTS),
        *((n[k], 2**64 - 1) for k in _COUNTERS),
    ]
    if any(not 0 <= value <= top for value, top in limits):
        raise ValueError("a number is out of range (proto, zone, port or counter)")
    return schema.RawRow(
        proto, family, n["zone"], osrc, odst, n["orig_sport"], n["orig_dport"], rsrc, rdst, n["reply_sport"],
        n["reply_dport"], n["orig_packets"], n["orig_bytes"], n["reply_packets"], n["reply_bytes"],
    )  # fmt: skip


def _render(column: str, value: Any) -> Any:
    """A value as ClickHouse shows it: addresses as text, the interval start as a UTC DateTime."""
    if column == "intervalStartTime":
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    if column.endswith("IPv4"):
        return str(ipaddress.IPv4Address(value))
    if isinstance(value, bytes):
        address = ipaddress.IPv6Address(value)
        return f"::ffff:{address.ipv4_mapped}" if address.ipv4_mapped else str(address)
    return value
