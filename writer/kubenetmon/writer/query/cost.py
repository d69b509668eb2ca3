"""``kubenetmon cost``: what the metered traffic costs, by namespace, app, workload, class, zone pair or
domain (the DNS name of the peer outside the cluster, where the agent saw one: ``remoteDNSName``).

One query over the cost view (``<table>_cost``: the exact rows priced by the price book in force) sums
``costUSD`` over both directions of the window's rows: each row is one side's charge (its egress or its
ingress, the who-pays rule in ``pricebook``), so the sum counts every side once, and the paying side is
the row's local side. Bytes are shown per direction; ``unpriced`` bytes are those no book entry covers
(an ``UNKNOWN`` class, or a cloud without a book). Totals come from window functions over all groups,
so ``--limit`` never changes them. ``build_query`` and ``render`` are pure; ``main`` is the thin shell.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Final, TextIO

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError, KubenetmonError
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.shared.timespec import parse_duration
from kubenetmon.shared.units import csv_cell, human_bytes, usd
from kubenetmon.writer.cost_tables import cost_view
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.flow_tables import fqn, node_table
from kubenetmon.writer.location import explain
from kubenetmon.writer.query.sql import add_target_arguments, run_query, target_settings
from kubenetmon.writer.sink import DEFAULT_DATABASE, QueryResult

FORMATS: Final = ("table", "json", "csv")
_POD: Final = "concat(localNamespace, '/', localPod)"
KEYS: Final[dict[str, str]] = {
    "namespace": "if(localNamespace != '', toString(localNamespace), '(not a pod)')",
    "app": f"multiIf(localApp != '', localApp, localWorkload != '', localWorkload, localPod != '', {_POD}, "
    "'(not a pod)')",
    "workload": "multiIf(localWorkload != '', concat(localNamespace, '/', localWorkloadKind, '/', "
    f"localWorkload), localPod != '', {_POD}, '(not a pod)')",
    "class": "if(costCharge != '', costCharge, concat('unpriced ', toString(connectionClass)))",
    "domain": "multiIf(remoteDNSName != '', toString(remoteDNSName), remotePod != '', '(in cluster)', "
    "'(no name)')",
    "zone-pair": "concat(if(localAvailabilityZone != '', toString(localAvailabilityZone), '?'), ' -> ', "
    "if(remoteAvailabilityZone != '', toString(remoteAvailabilityZone), '?'))",
}
FIELDS: Final = ("key", "cost_usd", "out_bytes", "in_bytes", "unpriced_bytes")


@dataclass(frozen=True)
class CostSpec:
    """What to report: grouping, window (seconds back from now), rows shown, where."""

    by: str = "namespace"
    since_s: float = 30 * 86400.0
    limit: int = 20
    database: str = DEFAULT_DATABASE
    view: str = "network_flows_0_cost"
    nodes_view: str = ""
    """The node rows' cost view (over ``<table>_node``), summed with the pod rows: a node's own traffic
    is its own line, ``node:<name>`` (the class and zone-pair keys keep a ``node:`` prefix too); empty:
    pod rows only."""


_COST_COLUMNS: Final = (
    "date", "intervalStartTime", "direction", "bytes", "connectionClass", "costCharge", "costEntry",
    "costUSD", "localNode", "localNamespace", "localPod", "localApp", "localWorkload", "localWorkloadKind",
    "localAvailabilityZone", "remoteAvailabilityZone",
)  # fmt: skip


def _key(spec: CostSpec) -> str:
    """The group of a row; with node rows, a node's own traffic keyed apart (never '(not a pod)')."""
    key = KEYS[spec.by]
    if not spec.nodes_view:
        return key
    if spec.by in ("class", "zone-pair"):
        return f"if(localKind = 'node', concat('node: ', {key}), {key})"
    owner = f"if(localPod != '', concat('/', {key}), '')"
    return f"if(localKind = 'node', concat('node:', localNode, {owner}), {key})"


def _source(spec: CostSpec) -> str:
    if not spec.nodes_view:
        return fqn(spec.database, spec.view)
    columns = ", ".join(_COST_COLUMNS)
    return (
        f"(SELECT {columns}, '' AS localKind FROM {fqn(spec.database, spec.view)}\n"
        f"    UNION ALL SELECT {columns}, localKind FROM {fqn(spec.database, spec.nodes_view)})"
    )


def build_query(spec: CostSpec, *, now: float) -> str:
    """The report's SQL: cost per ``spec.by`` group of the rows in ``[now - since, now]``, dearest first."""
    if spec.by not in KEYS or spec.limit < 1 or spec.since_s <= 0:
        raise ValueError(f"invalid cost spec {spec}")
    cutoff = int(now - spec.since_s)
    return f"""SELECT
    {_key(spec)} AS key,
    sum(costUSD) AS cost_usd,
    sumIf(bytes, direction = 'out') AS out_bytes,
    sumIf(bytes, direction = 'in') AS in_bytes,
    sumIf(bytes, costEntry = '') AS unpriced_bytes,
    sum(sum(costUSD)) OVER () AS total_usd,
    sum(sumIf(bytes, costEntry = '')) OVER () AS total_unpriced_bytes,
    count() OVER () AS groups
FROM {_source(spec)}
WHERE intervalStartTime >= toDateTime({cutoff}) AND date >= toDate(toDateTime({cutoff}))
GROUP BY key
ORDER BY cost_usd DESC, key
LIMIT {int(spec.limit)}"""


@dataclass(frozen=True)
class CostReport:
    spec: CostSpec
    rows: list[dict[str, Any]]
    total_usd: float = 0.0
    unpriced_bytes: int = 0
    groups: int = 0


def parse_report(result: QueryResult, *, spec: CostSpec) -> CostReport:
    col = {name: i for i, name in enumerate(result.columns)}
    rows = [
        {
            "key": str(r[col["key"]]),
            "cost_usd": round(float(r[col["cost_usd"]]), 9),
            "out_bytes": int(r[col["out_bytes"]]),
            "in_bytes": int(r[col["in_bytes"]]),
            "unpriced_bytes": int(r[col["unpriced_bytes"]]),
        }
        for r in result.rows
    ]
    if not result.rows:
        return CostReport(spec=spec, rows=[])
    first = result.rows[0]
    return CostReport(
        spec=spec,
        rows=rows,
        total_usd=round(float(first[col["total_usd"]]), 9),
        unpriced_bytes=int(first[col["total_unpriced_bytes"]]),
        groups=int(first[col["groups"]]),
    )


def title(report: CostReport) -> str:
    days = report.spec.since_s / 86400
    window = f"{days:g}d" if days >= 1 else f"{report.spec.since_s:g}s"
    head = f"network cost by {report.spec.by}, last {window}, at list prices of the price book in force"
    if not report.rows:
        return f"{head}: no traffic"
    line = f"{head}: {usd(report.total_usd)} ({len(report.rows)} of {report.groups} rows)"
    if report.unpriced_bytes:
        line += f"; {human_bytes(report.unpriced_bytes)} unpriced"
    return line


def render(report: CostReport, *, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        doc = {
            "by": report.spec.by,
            "since_seconds": report.spec.since_s,
            "total_usd": report.total_usd,
            "unpriced_bytes": report.unpriced_bytes,
            "groups": report.groups,
            "rows": report.rows,
        }
        out.write(json.dumps(doc) + "\n")
        return
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in report.rows)
        return
    out.write(title(report) + "\n")
    if not report.rows:
        return
    header = (report.spec.by.upper(), "COST", "SHARE", "OUT", "IN", "UNPRICED")
    cells = [
        (
            r["key"],
            usd(r["cost_usd"]),
            f"{100 * r['cost_usd'] / report.total_usd:.1f}%" if report.total_usd else "-",
            human_bytes(r["out_bytes"]),
            human_bytes(r["in_bytes"]),
            human_bytes(r["unpriced_bytes"]) if r["unpriced_bytes"] else "",
        )
        for r in report.rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (header, *cells):
        parts = [line[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(line[1:], widths[1:], strict=True))]
        out.write("  ".join(parts).rstrip() + "\n")


@dataclass(frozen=True)
class CostFlags:
    """The flags of ``cost`` besides its target (as typed; ``main`` reads them)."""

    since: str = option(
        "30d",
        flag="--since",
        native=True,
        metavar="DURATION",
        help="window: intervals that started this long ago",
    )
    by: str = option(
        "namespace",
        flag="--by",
        native=True,
        choices=tuple(KEYS),
        help="what a row is: the paying side's group, or the remote's DNS name (domain)",
    )
    format: str = option("table", flag="--format", native=True, choices=FORMATS, help="output format")
    limit: int = option(20, flag="--limit", kind="int", native=True, metavar="N", help="rows shown")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "What the metered traffic costs at the price book's list prices (see `clickhouse migrate "
        "--price-book`). Each side of a flow pays its own egress and ingress once; the paying side is the "
        "row's local side. Internet egress tiers are blended over the month's internet egress seen here."
    )
    add_target_arguments(parser)
    add_arguments(parser, CostFlags, title="report")


def main(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit: expected a positive number of rows, got {args.limit}")
    since_s = parse_duration(args.since)  # flags first, then where the data is
    settings = target_settings(args)
    target = parse_dsn(settings.dsn)
    spec = CostSpec(
        by=args.by,
        since_s=since_s,
        limit=args.limit,
        database=settings.database or target.database or DEFAULT_DATABASE,
        view=cost_view(settings.table),
        nodes_view=cost_view(node_table(settings.table)),
    )
    try:
        result = run_query(settings, build_query(spec, now=time.time()))
    except KubenetmonError as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"kubenetmon cost: {explain(exc)}", file=sys.stderr)
        return exits.FAILED
    render(parse_report(result, spec=spec), fmt=args.format, out=sys.stdout)
    return exits.DONE
