"""``kubenetmon check``: is a window's data whole, per node and interval? The gate before a billing export.

It reads the agents' ledger (``agent_reports_exact``) around the window and the nodes that metered
flows in it, hands them to ``completeness`` (the pure verdicts) and prints a table or JSON plus one
summary line. Exit codes (``exit_code``, listed in ``--help``): 0 only when at least one node-interval was
judged and all judged ones are complete; 1 incomplete (partial, silent, lossy, at-risk, any other state);
3 nothing to judge; 4 the store cannot be read. Intervals that end less than ``--settle`` before now are
judged only when complete (``completeness``: settled). ``--coverage`` also judges source coverage
(``coverage``): a node-interval whose conntrack metered under a threshold of the bytes its external
interfaces counted is blind, and is incomplete for the exit code. This module is a thin shell; it never
writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Final, TextIO

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError, KubenetmonError
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.shared.timespec import format_time, parse_duration, parse_time
from kubenetmon.writer.flow_tables import REPORTS_TABLE, exact_view, fqn, q
from kubenetmon.writer.location import explain
from kubenetmon.writer.query import completeness as c
from kubenetmon.writer.query import coverage as cov
from kubenetmon.writer.query.sql import Reader, add_target_arguments, target_settings
from kubenetmon.writer.sink import QueryResult

FORMATS: Final = ("table", "json")
DEFAULT_STEP_S: Final = 60


@dataclass(frozen=True)
class CheckSpec:
    start: int
    """Window start, Unix seconds (intervals starting at or after it are judged)."""
    end: int
    """Window end, Unix seconds (exclusive), as asked."""
    nodes: tuple[str, ...]
    """Only these nodes (empty: every node known in the window)."""
    reach_s: int
    """How far around the window to read reports: a catch-up after it may cover its last intervals."""
    flows_view: str
    database: str = ""
    """Qualifies the tables when set (a reader that does not default to the database)."""
    settled: int | None = None
    """Intervals ending after this (Unix seconds) are judged only when complete (``completeness``)."""
    accept_no_timestamps: bool = False
    """Judge intervals metered without conntrack creation timestamps complete instead of at-risk."""

    def relation(self, name: str) -> str:
        return fqn(self.database, name) if self.database else q(name)


@dataclass(frozen=True)
class CheckFlags:
    """The flags of ``check`` besides its target (as typed; ``main`` reads times and durations)."""

    start: str | None = option(
        None,
        flag="--from",
        dest="start",
        native=True,
        required=True,
        metavar="TIME",
        help="window start: -2h, RFC 3339, Unix s",
    )
    end: str = option(
        "now", flag="--to", dest="end", native=True, metavar="TIME", help="window end (exclusive)"
    )
    nodes: tuple[str, ...] = option(
        (), flag="--node", kind="append", metavar="NAME", help="judge only this node (repeatable)"
    )
    settle: str = option(
        f"{c.SETTLE_S // 60}m",
        flag="--settle",
        native=True,
        metavar="DURATION",
        help="an interval that ended less than this before now is judged only if complete"
        " (its reports may be in flight)",
    )
    reach: str = option(
        "6h",
        flag="--reach",
        native=True,
        metavar="DURATION",
        help="read reports this far around the window (catch-ups that cover it, nodes silent all along)",
    )
    format: str = option(
        "table", flag="--format", native=True, choices=FORMATS, help="a table per node, or JSON per interval"
    )
    coverage: bool = option(
        False,
        flag="--coverage",
        kind="switch",
        help="also judge source coverage: name node-intervals whose conntrack metered less than "
        "--coverage-threshold of the bytes on their external interfaces (blind), and fail on them",
    )
    coverage_threshold: float = option(
        cov.THRESHOLD,
        flag="--coverage-threshold",
        kind="float",
        native=True,
        metavar="RATIO",
        help="metered boundary bytes / interface bytes under which a node-interval is blind",
    )
    coverage_min_bytes: int = option(
        cov.MIN_BYTES,
        flag="--coverage-min-bytes",
        kind="int",
        native=True,
        metavar="BYTES",
        help="interface bytes below which an interval is too quiet to be judged blind",
    )
    accept_no_timestamps: bool = option(
        False,
        flag="--accept-no-timestamps",
        kind="switch",
        help="judge intervals metered without conntrack creation timestamps complete, not at-risk",
    )


EXIT_CODES: Final = (
    f"exit codes: {exits.DONE} complete (at least one node-interval judged, all complete or covered later); "
    f"{exits.INCOMPLETE} incomplete (any other verdict); {exits.USAGE} bad flags; "
    f"{exits.NOTHING_TO_JUDGE} nothing to judge (no node-interval in the window was judged); "
    f"{exits.UNREADABLE} the store cannot be read"
)


def exit_code(found: list[c.Verdict], *, blind: bool = False) -> int:
    """The gate: complete only when something was judged, everything judged is complete and, with
    ``--coverage``, no node-interval is blind."""
    if not c.judged(found):
        return exits.NOTHING_TO_JUDGE
    return exits.DONE if c.whole(found) and not blind else exits.INCOMPLETE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Judge every node and interval of a window from the agents' ledger (agent_reports): complete; "
        "covered later (a catch-up report after an outage covers it); partial (chunks missing); lossy "
        "(DESTROY events lost or conntrack table drops in its span); at-risk (conntrack creation timestamps "
        "off in its span: net.netfilter.nf_conntrack_timestamp); silent (no report covers it); rejected "
        "(the enricher refused a report for it as implausible, with the reason)."
    )
    parser.epilog = EXIT_CODES
    add_target_arguments(parser)
    add_arguments(parser, CheckFlags, title="window")


def spec_from(args: argparse.Namespace, *, now: float, flows_view: str) -> CheckSpec:
    start, end = parse_time(args.start, now=now), parse_time(args.end, now=now)
    if end <= start:
        raise ConfigError(f"--to {args.end} is not after --from {args.start}")
    return CheckSpec(
        start=int(start),
        end=int(end),
        nodes=tuple(args.node),
        reach_s=int(parse_duration(args.reach)),
        flows_view=flows_view,
        settled=int(now - parse_duration(args.settle)),
        accept_no_timestamps=bool(args.accept_no_timestamps),
    )


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _node_filter(column: str, nodes: tuple[str, ...]) -> str:
    return f" AND {q(column)} IN ({', '.join(map(_literal, nodes))})" if nodes else ""


def reports_query(spec: CheckSpec) -> str:
    lo, hi = spec.start - spec.reach_s, spec.end + spec.reach_s
    return (
        "SELECT node, boot, seq, toUInt32(intervalStartTime), intervalSeconds, chunk, chunks, "
        "spanFromMs, spanToMs, eventsLost, tableDrops, conntrackTimestamps, rejected, "
        "linkBytes, boundaryBytes "
        f"FROM {spec.relation(exact_view(REPORTS_TABLE))} "
        f"WHERE intervalStartTime >= toDateTime({lo}) AND intervalStartTime < toDateTime({hi})"
        f"{_node_filter('node', spec.nodes)}"
    )


def nodes_query(spec: CheckSpec) -> str:
    """Nodes that metered flows in the window: known even if their ledger is missing altogether."""
    return (
        f"SELECT DISTINCT observerNode FROM {spec.relation(spec.flows_view)} "
        f"WHERE intervalStartTime >= toDateTime({spec.start}) AND intervalStartTime < toDateTime({spec.end})"
    )


def chunk_rows(result: QueryResult) -> list[c.ChunkRow]:
    out = []
    for r in result.rows:
        seq, start, seconds, chunk, chunks, span_from, span_to, lost, drops, stamps = (
            int(v) for v in r[2:12]
        )
        out.append(
            c.ChunkRow(
                str(r[0]), str(r[1]), seq, start, seconds, chunk, chunks, span_from, span_to, lost, drops,
                stamps, rejected=str(r[12]), link_bytes=int(r[13]), boundary_bytes=int(r[14]),
            )
        )  # fmt: skip
    return out


def verdicts(
    rows: list[c.ChunkRow], *, spec: CheckSpec, known: list[str], step: int | None = None
) -> tuple[int, list[c.Verdict]]:
    """The step and the verdicts for the window (``known``: nodes seen elsewhere)."""
    step = step or c.step_of(rows, default=DEFAULT_STEP_S)
    nodes = [n for n in known if not spec.nodes or n in spec.nodes] + list(spec.nodes)
    found = c.classify(
        rows,
        nodes=nodes,
        start=spec.start,
        end=spec.end,
        step=step,
        settled=spec.settled,
        accept_no_timestamps=spec.accept_no_timestamps,
    )
    return step, found


def judge(reader: Any, spec: CheckSpec) -> tuple[int, list[c.Verdict]]:
    """Read the ledger and the nodes, and judge the window (``reader.query(sql) -> QueryResult``)."""
    rows = chunk_rows(reader.query(reports_query(spec)))
    known = [str(r[0]) for r in reader.query(nodes_query(spec)).rows]
    return verdicts(rows, spec=spec, known=known)


def header_text(reader: Any, *, database: str, flows_view: str, since_s: float, now: float) -> str:
    """The completeness of the last ``since_s`` seconds in a few words, for a report's header."""
    spec = CheckSpec(
        int(now - since_s), int(now), (), 3600, flows_view, database, settled=int(now) - c.SETTLE_S
    )
    try:
        _step, found = judge(reader, spec)
    except KubenetmonError:
        return "completeness unknown"
    return c.summary(found, shown=2, unjudged=False) if found else "no agent reports"


@dataclass(frozen=True)
class CoverageSpec:
    """``--coverage``: judge it, and where a node-interval is blind."""

    judged: bool = False
    threshold: float = cov.THRESHOLD
    min_bytes: int = cov.MIN_BYTES

    def blind(self, found: list[c.Verdict]) -> list[c.Verdict]:
        return cov.blind(found, threshold=self.threshold, min_bytes=self.min_bytes) if self.judged else []


def render(
    spec: CheckSpec,
    step: int,
    found: list[c.Verdict],
    *,
    fmt: str,
    out: TextIO,
    coverage: CoverageSpec = CoverageSpec(),
) -> None:
    line = c.summary(found)
    blind = coverage.blind(found)
    blind_set = set(blind)
    coverage_line = cov.summary(found, threshold=coverage.threshold, min_bytes=coverage.min_bytes)
    if fmt == "json":
        doc = {
            "from": format_time(spec.start),
            "to": format_time(spec.end),
            "step_s": step,
            "settled": format_time(spec.settled) if spec.settled is not None else None,
            "judged": c.judged(found),
            "whole": c.whole(found) and c.judged(found) > 0,
            "summary": line,
            "coverage": coverage_line,
            "blind": len(blind),
            "intervals": [
                {**asdict(v), "coverage": v.coverage, "blind": v in blind_set, "start": format_time(v.start)}
                for v in found
            ],
        }
        out.write(json.dumps(doc, indent=1) + "\n")
        return
    header = ("NODE", *(s.upper() for s in c.STATES))
    table = [header]
    for node in sorted({v.node for v in found}):
        mine = [v for v in found if v.node == node]
        table.append((node, *(str(sum(1 for v in mine if v.state == s)) for s in c.STATES)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out.write(f"window {format_time(spec.start)} to {format_time(spec.end)}, {step}s intervals")
    if any(v.state == c.NOT_SETTLED for v in found) and spec.settled is not None:
        out.write(f"; intervals ending after {format_time(spec.settled)} not settled yet")
    out.write("\n")
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    for v in found:
        if v.state == c.REJECTED:
            out.write(f"{v.node} {format_time(v.start)} rejected: {', '.join(v.reasons)}\n")
        if v.state in (c.LOSSY, c.PARTIAL):
            out.write(
                f"{v.node} {format_time(v.start)} {v.state}: {v.missing_chunks} chunks missing, "
                f"{v.events_lost} event overruns, {v.table_drops} table drops\n"
            )
        elif v.state == c.AT_RISK:
            out.write(
                f"{v.node} {format_time(v.start)} {v.state}: conntrack creation timestamps were off "
                "(net.netfilter.nf_conntrack_timestamp); --accept-no-timestamps to accept it\n"
            )
    if coverage.judged:
        _coverage_table(found, blind, out=out)
        out.write(coverage_line + "\n")
    out.write(line + "\n")


def _coverage_table(found: list[c.Verdict], blind: list[c.Verdict], *, out: TextIO) -> None:
    """Per node: intervals measured, interface and metered boundary bytes, coverage, blind intervals."""
    rows = [("NODE", "MEASURED", "LINK BYTES", "METERED", "COVERAGE", "BLIND")]
    for node, (n, link, bound) in sorted(cov.per_node(found).items()):
        ratio = f"{bound / link:.2f}" if link else "-"
        rows.append(
            (node, str(n), f"{link:,}", f"{bound:,}", ratio, str(sum(1 for v in blind if v.node == node)))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n")


def main(args: argparse.Namespace) -> int:
    settings = target_settings(args)
    spec = spec_from(args, now=time.time(), flows_view=exact_view(settings.table))
    reader = Reader(settings)
    try:
        step, found = judge(reader, spec)
    except KubenetmonError as exc:
        print(f"kubenetmon check: cannot read the store: {explain(exc)}", file=sys.stderr)
        return exits.UNREADABLE
    finally:
        reader.close()
    coverage = CoverageSpec(args.coverage, args.coverage_threshold, args.coverage_min_bytes)
    render(spec, step, found, fmt=args.format, out=sys.stdout, coverage=coverage)
    return exit_code(found, blind=bool(coverage.blind(found)))
