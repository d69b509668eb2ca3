"""``kubenetmon top``: the top talkers of a recent time window, read exactly, for a person at a glance.

One query against the exact view (``<table>_exact``, ``FINAL``) groups one direction's bytes by a pair of
endpoints (``--by app|pod|namespace|service|domain``; ``domain`` names an outside peer by the DNS name its
address was answered for, where the agent saw one), by class and cloud service (``class``) or by zone pair
(``zone``), sorted by bytes. ``bytes/s`` divides by the span the rows cover (first interval start to last
interval end), the same for every row, so rates compare like the bytes they come from. Values stay
numbers in ``json``/``csv``; the table shows units (B, KB, MB: powers of 1000) and aligned columns.

Without ``--data-dir`` or ``--clickhouse-dsn`` it reads ``kubenetmon up``'s default data directory.
``--watch S`` redraws every S seconds (a rich live table on a terminal, one summary line per refresh
otherwise); ``kubenetmon up`` runs exactly that as its live view, with ``--owner-only`` so the viewer
never opens the chDB directory that the writer must own. The query builder and the rendering are pure
(``build_query``, ``parse_report``, ``render``); this module never writes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from kubenetmon.shared import exits, runtime
from kubenetmon.shared.errors import ConfigError, KubenetmonError
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.shared.timespec import parse_duration
from kubenetmon.writer.cost_tables import cost_view
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.flow_tables import exact_view, node_table
from kubenetmon.writer.location import explain
from kubenetmon.writer.query.check import header_text
from kubenetmon.writer.query.endpoint import ask, live_endpoint
from kubenetmon.writer.query.sql import Reader, add_target_arguments, target_settings
from kubenetmon.writer.query.top_report import (
    BY,
    DIRECTIONS,
    FORMATS,
    Report,
    TopSpec,
    build_query,
    parse_report,
    render,
    rich_table,
    summary_line,
)
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import DEFAULT_DATABASE, QueryResult

_DRAIN_S = 5.0


class NoData(KubenetmonError):
    """The chDB directory does not exist (yet)."""


class NoOwner(KubenetmonError):
    """``--owner-only`` and no live writer serves the directory (yet)."""


@dataclasses.dataclass(frozen=True)
class ReportFlags:
    """The flags of ``top`` besides its target (as typed; durations are read by ``main``)."""

    since: str = option(
        "10m",
        flag="--since",
        native=True,
        metavar="DURATION",
        help="window: intervals that started this long ago or later",
    )
    by: str = option(
        "app",
        flag="--by",
        native=True,
        choices=BY,
        help="what a row is: endpoints' app, pod, namespace or service; class; zone pair; "
        "domain (the app, and an outside peer's DNS name where known)",
    )
    direction: str = option(
        "out",
        flag="--direction",
        native=True,
        choices=DIRECTIONS,
        help="out: bytes local endpoints sent; in: bytes they received",
    )
    cost: bool = option(
        False,
        flag="--cost",
        kind="switch",
        help="add what each row costs at the price book's list prices (out: egress, in: ingress charges)",
    )
    format: str = option("table", flag="--format", native=True, choices=FORMATS, help="output format")
    limit: int = option(20, flag="--limit", kind="int", native=True, metavar="N", help="rows shown")
    watch: str | None = option(
        None,
        flag="--watch",
        native=True,
        metavar="DURATION",
        help="redraw every DURATION until Ctrl-C or SIGTERM",
    )
    owner_only: bool = option(
        False,
        flag="--owner-only",
        kind="switch",
        help="with a chDB directory: only ask the writer that owns it (wait for one), never open it",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    add_arguments(parser, ReportFlags, title="report")


def spec_from(args: argparse.Namespace, settings: ClickHouseSettings) -> TopSpec:
    if args.limit < 1:
        raise ConfigError(f"--limit: expected a positive number of rows, got {args.limit}")
    target = parse_dsn(settings.dsn)
    return TopSpec(
        by=args.by,
        direction=args.direction,
        since_s=parse_duration(args.since),
        limit=args.limit,
        database=settings.database or target.database or DEFAULT_DATABASE,
        view=cost_view(settings.table) if args.cost else exact_view(settings.table),
        cost=args.cost,
        nodes_view=cost_view(node_table(settings.table))
        if args.cost
        else exact_view(node_table(settings.table)),
    )


class Source:
    """Runs the report's query on the target, or only through a chDB directory's owner (``owner_only``)."""

    def __init__(self, settings: ClickHouseSettings, *, owner_only: bool) -> None:
        self.target = parse_dsn(settings.dsn)
        self.owner_only = owner_only and self.target.kind == "chdb"
        self.timeout_s = settings.timeout_s
        self._reader = None if self.owner_only else Reader(settings)

    def query(self, sql: str) -> QueryResult:
        if self.target.kind == "chdb" and not os.path.isdir(self.target.path):
            # opening it would create an empty database: say what to do instead
            raise NoData(
                f"no kubenetmon data in {self.target.path} yet: `kubenetmon up` (or a writer) puts it there"
            )
        if self._reader is not None:
            return self._reader.query(sql)
        owner = live_endpoint(self.target.path)
        if owner is None:
            raise NoOwner("waiting for the writer to serve queries")
        return ask(owner, sql, timeout=self.timeout_s)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def main(args: argparse.Namespace) -> int:
    settings = target_settings(args, waits=args.owner_only)
    spec = spec_from(args, settings)
    source = Source(settings, owner_only=args.owner_only)
    try:
        if args.watch is not None:
            every = parse_duration(args.watch)
            return runtime.run(
                lambda stop: watch(source, spec, every_s=every, fmt=args.format, stop=stop),
                drain_timeout_s=_DRAIN_S,
            )
        return once(source, spec, fmt=args.format, out=sys.stdout)
    finally:
        source.close()


def once(source: Source, spec: TopSpec, *, fmt: str, out: TextIO) -> int:
    now = time.time()
    try:
        result = source.query(build_query(spec, now=now))
    except ConfigError:
        raise
    except KubenetmonError as exc:
        print(f"kubenetmon top: {explain(exc)}", file=sys.stderr)
        return exits.FAILED
    report = with_completeness(parse_report(result, spec=spec, now=now), source)
    render(report, fmt=fmt, out=out, color=fmt == "table" and out.isatty())
    return exits.DONE


def with_completeness(report: Report, source: Source) -> Report:
    """``report`` with its window's completeness for the header (see ``kubenetmon check``)."""
    spec = report.spec
    text = header_text(
        source, database=spec.database, flows_view=spec.view, since_s=spec.since_s, now=report.now
    )
    return dataclasses.replace(report, completeness=text)


async def watch(source: Source, spec: TopSpec, *, every_s: float, fmt: str, stop: asyncio.Event) -> int:
    """Refresh until ``stop``: a live table on a terminal, else one line (or one document) per refresh."""
    loop = asyncio.get_running_loop()
    live = None
    if fmt == "table" and sys.stdout.isatty():
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(), auto_refresh=False, transient=False)
        live.start()
    last_problem = ""
    # One thread for every query: a directly opened chDB client stays with the thread that opened it.
    with ThreadPoolExecutor(1, thread_name_prefix="top-query") as pool:
        try:
            while not stop.is_set():
                now = time.time()
                try:
                    result = await loop.run_in_executor(pool, source.query, build_query(spec, now=now))
                except ConfigError:
                    raise
                except KubenetmonError as exc:
                    problem = explain(exc)
                    if live is not None:
                        live.update(f"[dim]{problem}[/dim]", refresh=True)
                    elif problem != last_problem:
                        print(f"kubenetmon top: {problem}", flush=True)
                    last_problem = problem
                else:
                    last_problem = ""
                    report = parse_report(result, spec=spec, now=now)
                    report = await loop.run_in_executor(pool, with_completeness, report, source)
                    if live is not None:
                        live.update(rich_table(report, width=live.console.width), refresh=True)
                    elif fmt == "table":
                        print(summary_line(report), flush=True)
                    else:
                        render(report, fmt=fmt, out=sys.stdout, color=False)
                        sys.stdout.flush()
                await runtime.sleep_or_stop(stop, every_s)
        finally:
            if live is not None:
                live.stop()
    return exits.DONE
