"""Schema migrations: ``kubenetmon clickhouse migrate`` and the writer's start-up step.

Migrations are numbered and recorded per table in ``<database>.kubenetmon_migrations``; running them
again is a no-op, and an older schema is brought forward one version at a time. Every statement is
idempotent on its own (``IF NOT EXISTS``, ``CREATE OR REPLACE``), so a crash between applying a step
and recording it, or several writers migrating at once, is harmless. The TTL is a setting, not a
version: it is reconciled after the migrations, on the flows table and on the ledger of reports alike,
and only changed where it differs.

Every object a migration created is checked afterwards (``objects``): one that is missing (a dropped view
or ledger table) is created again from its migration's statements, and said so (``Outcome.recreated``);
a missing flows table re-applies every migration. A migration that adds or changes columns must be
followed by one that re-creates the exact view and the cost view, whose column lists are fixed when they
are created. After the migrations, the price book is loaded (``prices``): the one given, or the shipped
books when none was ever loaded. This module must not hold any knowledge of batching or NATS.

On a self-managed cluster (``cluster``: ``--clickhouse-cluster``) every statement goes through
``cluster.place`` (ON CLUSTER, replicated local tables behind Distributed ones), so a migration is
written once for both; the record of applied versions is then one table replicated on every server of
the cluster, so whichever server a writer reaches answers for the whole cluster; so is the price table
(``cluster.REPLICATED_EVERYWHERE``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.writer import cost_tables, flow_tables, pricebook
from kubenetmon.writer.cluster import data_table, place
from kubenetmon.writer.flow_tables import MIGRATIONS_TABLE
from kubenetmon.writer.location import add_target_arguments, target_settings
from kubenetmon.writer.prices import load_prices
from kubenetmon.writer.sink import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str, str], list[str]]
    """``(database, table) -> statements``."""


MIGRATIONS: Final = (
    Migration(
        1,
        "flows table: kubenetmon's columns and the row identity",
        lambda d, t: [flow_tables.create_table(d, t)],
    ),
    Migration(
        2, "workload, service and cross-zone columns", lambda d, t: [flow_tables.add_label_columns(d, t)]
    ),
    Migration(
        3,
        "skipping indexes for app, pod, namespace, class and zone",
        lambda d, t: [flow_tables.add_indexes(d, t)],
    ),
    Migration(4, "exact read view <table>_exact (FINAL)", lambda d, t: [flow_tables.create_exact_view(d, t)]),
    Migration(
        5,
        "price book table and cost view <table>_cost",
        lambda d, t: [cost_tables.create_price_table(d), cost_tables.create_cost_view(d, t)],
    ),
    Migration(
        6,
        "ledger of reports: agent_reports and agent_reports_exact",
        lambda d, t: [flow_tables.create_reports_table(d), flow_tables.create_reports_exact_view(d)],
    ),
    Migration(
        7,
        "remoteDNSName column; exact and cost views re-created",
        lambda d, t: [
            flow_tables.add_name_columns(d, t),
            flow_tables.create_exact_view(d, t),
            cost_tables.create_cost_view(d, t),
        ],
    ),
    Migration(
        8,
        "ledger: whether conntrack stamped creation times (agent_reports.conntrackTimestamps)",
        lambda d, t: [flow_tables.add_reports_timestamps(d), flow_tables.create_reports_exact_view(d)],
    ),
    Migration(
        9,
        "rejected reports: agent_reports.rejected",
        lambda d, t: [flow_tables.add_rejected_column(d), flow_tables.create_reports_exact_view(d)],
    ),
    Migration(
        10,
        "node rows: <table>_node with its exact and cost views; source coverage in agent_reports",
        lambda d, t: [
            flow_tables.create_node_table(d, t),
            flow_tables.create_exact_view(d, flow_tables.node_table(t)),
            cost_tables.create_cost_view(d, flow_tables.node_table(t)),
            flow_tables.add_coverage_columns(d),
            flow_tables.create_reports_exact_view(d),
        ],
    ),
)
PRICES_VERSION: Final = 5
REPORTS_VERSION: Final = 6
NODE_VERSION: Final = 10
LATEST: Final = MIGRATIONS[-1].version


def objects(table: str) -> list[tuple[int, str]]:
    """``(version, name)`` of every object besides the flows table that the migration ``version`` creates."""
    return [
        (4, flow_tables.exact_view(table)),
        (PRICES_VERSION, cost_tables.PRICES_TABLE),
        (PRICES_VERSION, cost_tables.cost_view(table)),
        (REPORTS_VERSION, flow_tables.REPORTS_TABLE),
        (REPORTS_VERSION, flow_tables.exact_view(flow_tables.REPORTS_TABLE)),
    ]


@dataclass(frozen=True)
class Outcome:
    before: int
    after: int
    applied: tuple[int, ...]
    ttl_changed: bool
    prices_changed: bool = False
    recreated: tuple[str, ...] = ()
    """Objects of applied migrations that were missing and were created again."""


def _record_table(database: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {flow_tables.fqn(database, MIGRATIONS_TABLE)} (
    `table` String,
    `version` UInt32,
    `name` String,
    `appliedAt` DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY (`table`, `version`)"""


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def applied_versions(sink: Sink, *, database: str, table: str) -> set[int]:
    """Versions recorded for ``table`` (empty if nothing was ever migrated)."""
    exists = sink.query(f"EXISTS TABLE {flow_tables.fqn(database, MIGRATIONS_TABLE)}").rows[0][0]
    if not exists:
        return set()
    rows = sink.query(
        f"SELECT version FROM {flow_tables.fqn(database, MIGRATIONS_TABLE)} FINAL "
        f"WHERE `table` = {_literal(table)}"
    ).rows
    return {int(r[0]) for r in rows}


def current_version(sink: Sink, *, database: str, table: str) -> int:
    return max(applied_versions(sink, database=database, table=table), default=0)


def migrate(
    sink: Sink,
    *,
    database: str,
    table: str,
    ttl_days: int,
    to_version: int = LATEST,
    price_book: pricebook.PriceBook | None = None,
    cluster: str = "",
) -> Outcome:
    """Bring ``database.table`` to ``to_version`` and its TTL to ``ttl_days`` (0: none), on
    ``cluster`` if one is named; load ``price_book``, or the shipped books if no book was ever loaded."""
    if not 0 <= to_version <= LATEST:
        raise ConfigError(f"--to-version: expected 0 to {LATEST}, got {to_version}")
    for statement in (f"CREATE DATABASE IF NOT EXISTS {flow_tables.q(database)}", _record_table(database)):
        for placed in place(statement, cluster=cluster):
            sink.command(placed)
    done = applied_versions(sink, database=database, table=table)
    if done and not _exists(sink, database=database, table=table, cluster=cluster):
        # The table was dropped (e.g. to reload it with `replay enriched`): its versions no longer hold.
        log.warning("flows table missing although migrated; applying every migration again")
        done = set()
    before = max(done, default=0)
    applied = []
    for step in MIGRATIONS:
        if step.version > to_version or step.version in done:
            continue
        for statement in step.statements(database, table):
            for placed in place(statement, cluster=cluster):
                sink.command(placed)
        sink.command(
            f"INSERT INTO {flow_tables.fqn(database, MIGRATIONS_TABLE)} (`table`, `version`, `name`) "
            f"VALUES ({_literal(table)}, {step.version}, {_literal(step.name)})"
        )
        applied.append(step.version)
        log.info(
            "schema migration applied",
            extra={"table": table, "version": step.version, "migration": step.name},
        )
    recreated = _recreate_missing(
        sink, database=database, table=table, versions={*done, *applied}, cluster=cluster
    )
    ttl_changed = False
    for holder, date in _ttl_tables(table, to_version):
        changed = _reconcile_ttl(
            sink, database=database, table=holder, date=date, days=ttl_days, cluster=cluster
        )
        ttl_changed = changed or ttl_changed
    prices_changed = False
    if to_version >= PRICES_VERSION:
        prices_changed = load_prices(
            sink,
            database=database,
            book=price_book or pricebook.load(),
            only_if_empty=price_book is None,
            cluster=cluster,
        ).changed
    return Outcome(
        before=before,
        after=max(before, *applied, 0),
        applied=tuple(applied),
        ttl_changed=ttl_changed,
        prices_changed=prices_changed,
        recreated=recreated,
    )


def _recreate_missing(
    sink: Sink, *, database: str, table: str, versions: set[int], cluster: str
) -> tuple[str, ...]:
    """Create again what the applied migrations made and is gone (all their statements are idempotent)."""
    missing = [
        name
        for version, name in objects(table)
        if version in versions and not _object_exists(sink, database=database, name=name)
    ]
    if not missing:
        return ()
    # A view reads the objects before it: re-run every step from the first one that lost an object.
    first = min(v for v, name in objects(table) if name in missing)
    for step in MIGRATIONS:
        if step.version >= first and step.version in versions:
            for statement in step.statements(database, table):
                for placed in place(statement, cluster=cluster):
                    sink.command(placed)
    log.warning("schema objects were missing and were created again", extra={"objects": missing})
    return tuple(missing)


def _object_exists(sink: Sink, *, database: str, name: str) -> bool:
    """Whether a table or view a migration made exists (on a cluster: its cluster-wide name; a view has no
    local table)."""
    return bool(sink.query(f"EXISTS TABLE {flow_tables.fqn(database, name)}").rows[0][0])


def _exists(sink: Sink, *, database: str, table: str, cluster: str) -> bool:
    """Whether the flows table (and, on a cluster, its local table on this server) exists."""
    names = {table, data_table(table, cluster=cluster)}
    return all(sink.query(f"EXISTS TABLE {flow_tables.fqn(database, name)}").rows[0][0] for name in names)


def _ttl_tables(table: str, version: int) -> list[tuple[str, str]]:
    """The tables ``--ttl-days`` applies to at schema ``version``, each with the date its rows expire from:
    the flows table and, from the migration that creates it, the ledger of reports."""
    tables = [(table, "date")] if version >= 1 else []
    if version >= REPORTS_VERSION:
        tables.append((flow_tables.REPORTS_TABLE, flow_tables.REPORTS_TTL_DATE))
    if version >= NODE_VERSION:
        tables.append((flow_tables.node_table(table), "date"))
    return tables


def _reconcile_ttl(sink: Sink, *, database: str, table: str, date: str, days: int, cluster: str) -> bool:
    """Set the TTL of the table holding the rows (on a cluster: the local tables, read on this server)."""
    holder = data_table(table, cluster=cluster)
    engine = sink.query(
        "SELECT engine_full FROM system.tables "
        f"WHERE database = {_literal(database)} AND name = {_literal(holder)}"
    ).rows
    current = str(engine[0][0]) if engine else ""
    wanted = flow_tables.ttl_clause(days, date=date)
    has_ttl = " TTL " in f" {current} "
    if (days > 0 and wanted in current) or (days <= 0 and not has_ttl):
        return False
    for statement in place(flow_tables.modify_ttl(database, table, days, date=date), cluster=cluster):
        sink.command(statement)
    log.info("table TTL changed", extra={"table": table, "ttl_days": days})
    return True


# --------------------------------------------------------------------------------------------------
# kubenetmon clickhouse migrate


@dataclass(frozen=True)
class MigrateFlags:
    """The flags of ``clickhouse migrate`` besides the ClickHouse ones."""

    to_version: int = option(
        LATEST,
        flag="--to-version",
        kind="int",
        native=True,
        metavar="N",
        help=f"stop at schema version N (staged upgrades; latest is {LATEST})",
    )
    price_books: tuple[str, ...] = option(
        (),
        flag="--price-book",
        kind="append",
        metavar="FILE",
        help="YAML price book adding or overriding entries of the shipped AWS, GCP and Azure list prices "
        "(by id; repeatable, later files win); the result replaces the book in force, re-pricing the past",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="clickhouse_command", metavar="ACTION")
    sub = subs.add_parser(
        "migrate",
        help="create or upgrade the database, the flows table and its views; load the price book",
        description="Create or upgrade the database, the flows table, its exact and cost views, and load the "
        "price book (shipped list prices plus --price-book files). Safe to repeat.",
        formatter_class=parser.formatter_class,
    )
    add_target_arguments(sub, writes=True)
    add_arguments(sub, MigrateFlags, title=None)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "clickhouse_command", None) != "migrate":
        print("kubenetmon clickhouse: choose an action: migrate", file=sys.stderr)
        return exits.USAGE
    settings = target_settings(args, creates=True)
    book = pricebook.load(args.price_book)  # a bad file fails here, before touching ClickHouse
    sink = Sink(settings)
    try:
        out = migrate(
            sink,
            database=sink.database,
            table=settings.table,
            ttl_days=settings.ttl_days,
            to_version=args.to_version,
            price_book=book,
            cluster=settings.cluster,
        )
    except TransientError as exc:
        print(f"kubenetmon clickhouse migrate: {exc}", file=sys.stderr)
        return exits.FAILED
    finally:
        sink.close()
    steps = ", ".join(map(str, out.applied)) or ("none" if out.recreated else "none (already up to date)")
    if out.recreated:
        steps += f"; recreated missing: {', '.join(out.recreated)}"
    where = f" (cluster {settings.cluster})" if settings.cluster else ""
    print(
        f"{sink.target.display}{where} {sink.database}.{settings.table}: "
        f"schema version {out.before} -> {out.after}; "
        f"applied: {steps}; TTL {'changed' if out.ttl_changed else 'unchanged'}; "
        f"price book {book.digest} {'loaded' if out.prices_changed else 'unchanged'}"
    )
    return exits.DONE
