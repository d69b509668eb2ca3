"""``kubenetmon sql``: run one query against the flows database, and the read path ``top`` reuses.

Where the data is follows the one rule of ``kubenetmon.writer.location`` (``--data-dir`` or
``--clickhouse-dsn``, with ``up``'s data directory as the default). For a chDB directory that a running writer
owns, the query goes to that writer's read-only endpoint instead of opening the directory (chDB allows one
process per directory); otherwise the directory is opened here, for this query only. Unqualified table
names resolve in the configured database; read ``<table>_exact`` for exact totals (``<table>`` itself may
still hold rows that a later version replaces).

Every query runs in a read-only ClickHouse session (``readonly=2``) unless ``sql --write`` asks for a
writable one, which a directory owned by a running writer never gets. This module never writes rows itself.
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
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.writer.location import add_target_arguments, explain, target_settings
from kubenetmon.writer.query.endpoint import (
    READ_ONLY,
    EndpointUnreachable,
    ask,
    live_endpoint,
    plain_result,
)
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import QueryResult, Sink

__all__ = ["Reader", "add_target_arguments", "render", "run_query", "target_settings"]

FORMATS: Final = ("table", "json", "csv")


@dataclass(frozen=True)
class SqlFlags:
    format: str = option(
        "table", flag="--format", native=True, choices=FORMATS, help="aligned table, JSON array or CSV"
    )
    write: bool = option(
        False,
        flag="--write",
        kind="switch",
        help="allow statements that change data or schema (default: a read-only session);"
        " not while a writer owns the directory",
    )


class Reader:
    """Runs queries on one target; asks the owner of a chDB directory when there is one.

    A directly opened directory stays open until ``close()`` (so a live view does not reopen it each time).
    Queries run in a read-only session unless ``write``.
    """

    def __init__(self, settings: ClickHouseSettings, *, write: bool = False) -> None:
        self.settings = settings
        self._sink = Sink(settings, use_database=True)
        self._session = {} if write else READ_ONLY
        self._write = write

    def query(self, query: str) -> QueryResult:
        """Column names and rows (JSON-safe values); ``QueryFailed`` or ``SinkUnavailable`` on errors."""
        if self._sink.embedded and not self._sink.is_open:
            owner = live_endpoint(self._sink.target.path)
            if owner is not None and owner.pid != os.getpid():
                if self._write:
                    raise ConfigError(
                        f"--write: a writer (pid {owner.pid}) owns {self._sink.target.path};"
                        " stop it first (its endpoint answers read-only queries)"
                    )
                try:
                    return ask(owner, query, timeout=self.settings.timeout_s)
                except EndpointUnreachable:
                    pass  # a stale announcement: open the directory (fails cleanly if it is held)
        return plain_result(self._sink.query(query, settings=self._session))

    def close(self) -> None:
        self._sink.close()


def run_query(settings: ClickHouseSettings, query: str, *, write: bool = False) -> QueryResult:
    """One query, then release the target: ``(column_names, rows)``."""
    reader = Reader(settings, write=write)
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
    if isinstance(value, bool):
        return "true" if value else "false"
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
    parser.description = (
        "Run one SQL query against the flows database, in a read-only session unless --write."
        " Read <table>_exact for exact totals."
    )
    add_target_arguments(parser)
    add_arguments(parser, SqlFlags, title=None)
    parser.add_argument("query", metavar="QUERY", help="SQL; unqualified tables resolve in --database")


def main(args: argparse.Namespace) -> int:
    settings = target_settings(args)
    try:
        result = run_query(settings, args.query, write=args.write)
    except ConfigError:
        raise
    except KubenetmonError as exc:
        if not args.write and "(READONLY)" in str(exc):
            exc = KubenetmonError("the session is read-only: add --write to change data or schema")
        print(f"kubenetmon sql: {explain(exc)}", file=sys.stderr)
        return exits.FAILED
    render(result, fmt=args.format, out=sys.stdout)
    return exits.DONE
