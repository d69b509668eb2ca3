"""``kubenetmon sql``: run one query against the flows database, and the read path ``top`` reuses.

``--clickhouse-dsn DSN`` names any target; ``--data-dir DIR`` is shorthand for ``chdb://DIR/clickhouse``,
the layout ``kubenetmon up`` uses. For a chDB directory that a running writer owns, the query goes to that
writer's read-only endpoint instead of opening the directory (chDB allows one process per directory);
otherwise the directory is opened here, for this query only. Unqualified table names resolve in the
configured database; read ``<table>_exact`` for exact totals (``<table>`` itself may still hold rows that
a later version replaces).

This module never writes rows; it only reads, or runs what the user typed against a target nobody owns.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Final, TextIO

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError, KubenetmonError
from kubenetmon.shared.options import add_arguments, from_args, option
from kubenetmon.writer.query.endpoint import EndpointUnreachable, ask, live_endpoint, plain_result
from kubenetmon.writer.settings import ClickHouseSettings, add_clickhouse_arguments
from kubenetmon.writer.sink import QueryResult, Sink

FORMATS: Final = ("table", "json", "csv")


def data_dir_dsn(data_dir: str) -> str:
    """The DSN of the chDB directory inside a ``kubenetmon up`` data directory."""
    return "chdb://" + os.path.join(os.path.abspath(data_dir), "clickhouse")


@dataclass(frozen=True)
class TargetFlags:
    """Where a read command looks, besides the ClickHouse flags."""

    data_dir: str | None = option(
        None,
        flag="--data-dir",
        native=True,
        metavar="DIR",
        help="local data directory: same as --clickhouse-dsn chdb://DIR/clickhouse",
    )


@dataclass(frozen=True)
class SqlFlags:
    format: str = option("table", flag="--format", native=True, choices=FORMATS, help="output format")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clickhouse-dsn`` (and the other ClickHouse flags) or ``--data-dir``."""
    add_clickhouse_arguments(parser)
    add_arguments(parser, TargetFlags, title=None)


def target_settings(args: argparse.Namespace) -> ClickHouseSettings:
    data_dir = getattr(args, "data_dir", None)
    if data_dir and args.clickhouse_dsn:
        raise ConfigError("give either --clickhouse-dsn or --data-dir, not both")
    if not data_dir and not args.clickhouse_dsn:
        raise ConfigError("--clickhouse-dsn or --data-dir is required")
    if data_dir and not os.path.isdir(os.path.join(data_dir, "clickhouse")):
        # Opening a missing directory would create an empty database there and answer "no rows".
        raise ConfigError(f"--data-dir {data_dir}: no kubenetmon data there (run `kubenetmon up` first)")
    overrides = {"dsn": data_dir_dsn(data_dir)} if data_dir else {}
    return from_args(ClickHouseSettings, args, **overrides).with_secret().check_files()


class Reader:
    """Runs queries on one target; asks the owner of a chDB directory when there is one.

    A directly opened directory stays open until ``close()`` (so a live view does not reopen it each time).
    """

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings
        self._sink = Sink(settings, use_database=True)

    def query(self, query: str) -> QueryResult:
        """Column names and rows (JSON-safe values); ``QueryFailed`` or ``SinkUnavailable`` on errors."""
        if self._sink.embedded and not self._sink.is_open:
            owner = live_endpoint(self._sink.target.path)
            if owner is not None and owner.pid != os.getpid():
                try:
                    return ask(owner, query, timeout=self.settings.timeout_s)
                except EndpointUnreachable:
                    pass  # a stale announcement: open the directory (fails cleanly if it is held)
        return plain_result(self._sink.query(query))

    def close(self) -> None:
        self._sink.close()


def run_query(settings: ClickHouseSettings, query: str) -> QueryResult:
    """One query, then release the target: ``(column_names, rows)``."""
    reader = Reader(settings)
    try:
        return reader.query(query)
    finally:
        reader.close()


def render(result: QueryResult, *, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump([dict(zip(result.columns, row, strict=True)) for row in result.rows], out, indent=None)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([[_text(v) for v in row] for row in result.rows])
    else:
        _table(result, out)


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _table(result: QueryResult, out: TextIO) -> None:
    cells = [[_text(v) for v in row] for row in result.rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(result.columns)]
    numeric = [all(isinstance(row[i], (int, float)) for row in result.rows) for i in range(len(widths))]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out.write(line(list(result.columns)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")


def configure(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    add_arguments(parser, SqlFlags, title=None)
    parser.add_argument("query", metavar="QUERY", help="SQL; unqualified tables resolve in --database")


def main(args: argparse.Namespace) -> int:
    settings = target_settings(args)
    try:
        result = run_query(settings, args.query)
    except ConfigError:
        raise
    except KubenetmonError as exc:
        print(f"kubenetmon sql: {exc}", file=sys.stderr)
        return exits.FAILED
    render(result, fmt=args.format, out=sys.stdout)
    return exits.DONE
