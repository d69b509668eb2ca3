"""Cluster mode: every statement the migrations send to a cluster, checked by ClickHouse's own parser.

No ClickHouse cluster runs here, so these tests check the statements rather than their effect: each one
parses (chDB's ``formatQuery``), and the normalised text has the engine, the ``ON CLUSTER`` and the
sharding key expected; a rehearsal runs them on chDB as the one shard of a cluster. Without a cluster,
migrations and the price load send exactly the single-node statements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import COLUMN_NAMES
from kubenetmon.writer import cli as writer_cli
from kubenetmon.writer import cost_tables, pricebook, replay
from kubenetmon.writer import flow_tables as tables
from kubenetmon.writer.cluster import REPLICATED_EVERYWHERE, data_table, literal, place
from kubenetmon.writer.cost_tables import PRICES_TABLE
from kubenetmon.writer.flow_tables import REPORTS_TABLE, REPORTS_TTL_DATE
from kubenetmon.writer.migrate import LATEST, MIGRATIONS, MIGRATIONS_TABLE, migrate
from kubenetmon.writer.settings import ClickHouseSettings, clickhouse_settings
from kubenetmon.writer.sink import QueryResult, Sink
from tests.support.commands import kubenetmon

DB, TABLE, CLUSTER = "kubenetmon", "network_flows_0", "metering"
LOCAL = f"{TABLE}_local"
ON = f"ON CLUSTER {CLUSTER}"


@pytest.fixture
def normalise(chdb_settings: ClickHouseSettings) -> Iterator[Callable[[str], str]]:
    """ClickHouse's parser: the statement normalised by ``formatQuery`` (raises if it does not parse)."""
    sink = Sink(chdb_settings)

    def run(statement: str) -> str:
        return " ".join(str(sink.query(f"SELECT formatQuery({literal(statement)})").rows[0][0]).split())

    yield run
    sink.close()


def migration_statements(cluster: str) -> list[str]:
    return [
        placed
        for step in MIGRATIONS
        for statement in step.statements(DB, TABLE)
        for placed in place(statement, cluster=cluster)
    ]


class Recorder:
    """Our ``Sink`` boundary, recording statements: a cluster's DDL cannot run on one embedded server.

    It answers as an empty server does: no table exists, no version is recorded, no price book loaded.
    """

    database, table = DB, TABLE

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.inserts: list[tuple[str, int]] = []
        """``(table, rows)`` of each columnar insert."""

    def command(self, sql: str) -> Any:
        self.statements.append(sql)

    def insert(self, table: str, columns: Any, **_: Any) -> int:
        self.inserts.append((table, len(columns[0])))
        return len(columns[0])

    def query(self, sql: str, **_: Any) -> QueryResult:
        if sql.startswith("EXISTS"):  # what this recorder was asked to create exists from then on
            name = sql.removeprefix("EXISTS TABLE ").replace("`", "")
            made = any(s.startswith("CREATE") and name in s.replace("`", "") for s in self.statements)
            return QueryResult(["x"], [(int(made),)])
        if f"FROM `{DB}`.`{PRICES_TABLE}`" in sql:  # the book in force: aggregates over no rows
            return QueryResult(["at", "book", "n"], [(0.0, "", 0)])
        return QueryResult(["x"], [])


def _price_delete(statement: str) -> bool:
    return statement.startswith(f"ALTER TABLE `{DB}`.`{PRICES_TABLE}` DELETE WHERE loadedAt < toDateTime64(")


def _ttls(days: int) -> list[str]:
    """The TTL statements a first migrate sends: the flows table's, the ledger's, the node table's."""
    return [
        tables.modify_ttl(DB, TABLE, days),
        tables.modify_ttl(DB, REPORTS_TABLE, days, date=REPORTS_TTL_DATE),
        tables.modify_ttl(DB, tables.node_table(TABLE), days),
    ]


def test_without_a_cluster_statements_pass_through_unchanged() -> None:
    plain = [s for step in MIGRATIONS for s in step.statements(DB, TABLE)]
    assert migration_statements("") == plain
    assert place(tables.modify_ttl(DB, TABLE, 3), cluster="") == [tables.modify_ttl(DB, TABLE, 3)]
    sent = Recorder()
    migrate(sent, database=DB, table=TABLE, ttl_days=90)  # type: ignore[arg-type]
    record = """CREATE TABLE IF NOT EXISTS `kubenetmon`.`kubenetmon_migrations` (
    `table` String,
    `version` UInt32,
    `name` String,
    `appliedAt` DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY (`table`, `version`)"""
    assert sent.statements[:2] == ["CREATE DATABASE IF NOT EXISTS `kubenetmon`", record]
    *ddl, delete = [s for s in sent.statements[2:] if not s.startswith("INSERT")]
    assert ddl == [*plain, *_ttls(90)]
    # the shipped price book, loaded into the price table by name; older loads deleted
    assert _price_delete(delete) and place(delete, cluster="") == [delete]
    assert sent.inserts == [(PRICES_TABLE, len(pricebook.table_rows(pricebook.load())))]


def test_every_statement_of_every_migration_parses_on_a_cluster(normalise: Callable[[str], str]) -> None:
    statements = migration_statements(CLUSTER)
    # per table: a replicated local table and a Distributed one; per column change: both of them
    assert len(statements) > len(migration_statements(""))
    for statement in statements:
        assert f" {ON} " in normalise(statement), statement


def test_the_flows_table_is_replicated_per_shard_behind_a_distributed_table(
    normalise: Callable[[str], str], clickhouse: Sink
) -> None:
    create = next(s for s in MIGRATIONS[0].statements(DB, TABLE))
    local, public = (normalise(s) for s in place(create, cluster=CLUSTER))
    assert local.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.{LOCAL} {ON} (")
    assert (
        f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{DB}/{LOCAL}', "
        "'{replica}', enrichedAt) PARTITION BY date ORDER BY (intervalStartTime, observerNode, flowId)"
    ) in local
    assert public == (
        f"CREATE TABLE IF NOT EXISTS {DB}.{TABLE} {ON} AS {DB}.{LOCAL} ENGINE = Distributed('{CLUSTER}', "
        f"'{DB}', '{LOCAL}', cityHash64(intervalStartTime, observerNode, flowId))"
    )
    # the sharding key hashes exactly the row identity (the sorting key a single server has), so every
    # version of a row lands on one shard and FINAL, done per shard, stays exact
    key = clickhouse.query(
        f"SELECT sorting_key FROM system.tables WHERE database = '{DB}' AND name = '{TABLE}'"
    ).rows[0][0]
    assert f"cityHash64({key})" in public


def test_the_exact_view_reads_the_distributed_table_with_final(normalise: Callable[[str], str]) -> None:
    view = next(s for step in MIGRATIONS for s in step.statements(DB, TABLE) if "VIEW" in s)
    (placed,) = place(view, cluster=CLUSTER)
    assert normalise(placed) == (
        f"CREATE OR REPLACE VIEW {DB}.{TABLE}_exact {ON} AS SELECT * FROM {DB}.{TABLE} FINAL"
    )


def test_the_price_table_is_kept_whole_on_every_server(normalise: Callable[[str], str]) -> None:
    """Small and joined against every shard's rows: one replica set over the whole cluster, no shards."""
    assert REPLICATED_EVERYWHERE == {MIGRATIONS_TABLE, PRICES_TABLE}
    single = cost_tables.create_price_table(DB)
    (created,) = place(single, cluster=CLUSTER)
    text = normalise(created)
    assert text.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.{PRICES_TABLE} {ON} (")
    assert text.endswith(
        f"ENGINE = ReplicatedMergeTree('/clickhouse/kubenetmon/{CLUSTER}/{DB}/{PRICES_TABLE}', "
        "'{shard}-{replica}') ORDER BY (loadedAt, cloud, charge, entry, direction)"
    )
    assert text.split(" ENGINE = ")[0] == normalise(single).split(" ENGINE = ")[0].replace(
        f"{PRICES_TABLE} (", f"{PRICES_TABLE} {ON} ("
    )  # the single server's columns
    assert data_table(PRICES_TABLE, cluster=CLUSTER) == PRICES_TABLE
    # ALTERs (columns, mutations) run once: Keeper carries them to every replica of the set
    for alter in (
        f"ALTER TABLE `{DB}`.`{PRICES_TABLE}` ADD COLUMN IF NOT EXISTS `note` String",
        f"ALTER TABLE `{DB}`.`{PRICES_TABLE}` DELETE WHERE loadedAt < toDateTime64(1796361943.513, 3)",
    ):
        assert place(alter, cluster=CLUSTER) == [alter]
        normalise(alter)
    drop = f"DROP TABLE IF EXISTS `{DB}`.`{PRICES_TABLE}` SYNC"
    assert [normalise(s) for s in place(drop, cluster=CLUSTER)] == [
        f"DROP TABLE IF EXISTS {DB}.{PRICES_TABLE} {ON} SYNC"
    ]


def test_the_cost_view_prices_the_exact_rows_with_the_local_price_table(
    normalise: Callable[[str], str],
) -> None:
    view = cost_tables.create_cost_view(DB, TABLE)
    (placed,) = place(view, cluster=CLUSTER)
    text = normalise(placed)
    name = f"VIEW {DB}.{cost_tables.cost_view(TABLE)}"
    assert text == normalise(view).replace(f"{name} AS", f"{name} {ON} AS")
    # the flows through the exact view (the Distributed table, FINAL on each shard), joined on the server
    # that runs the query; the book from the price table there, which is whole on every server: no GLOBAL
    # join, no shard-local table named
    assert text.count(f"FROM {DB}.{TABLE}_exact") == 2 and f"FROM {DB}.{PRICES_TABLE} " in text
    assert "GLOBAL" not in text and "_local" not in text


def test_alters_reach_the_tables_that_need_them(normalise: Callable[[str], str]) -> None:
    # new columns: the local tables first, then the Distributed table (inserts name them)
    add = place(tables.add_label_columns(DB, TABLE), cluster=CLUSTER)
    assert [normalise(s).split(" (ADD ")[0] for s in add] == [
        f"ALTER TABLE {DB}.{LOCAL} {ON}",
        f"ALTER TABLE {DB}.{TABLE} {ON}",
    ]
    assert all(normalise(s).count("ADD COLUMN") == len(tables.LABEL_COLUMNS) for s in add)
    # indexes and the TTL belong to the tables holding the parts only
    (indexes,) = place(tables.add_indexes(DB, TABLE), cluster=CLUSTER)
    assert normalise(indexes).startswith(f"ALTER TABLE {DB}.{LOCAL} {ON} (ADD INDEX")
    for days, clause in ((7, "MODIFY TTL date + toIntervalDay(7)"), (0, "REMOVE TTL")):
        (ttl,) = place(tables.modify_ttl(DB, TABLE, days), cluster=CLUSTER)
        assert normalise(ttl) == f"ALTER TABLE {DB}.{LOCAL} {ON} ({clause})"
    # a dropped column leaves the Distributed table first; a mixed ALTER is split by target
    mixed = (
        f"ALTER TABLE `{DB}`.`{TABLE}` DROP COLUMN IF EXISTS `x`, ADD INDEX i `y` TYPE set(8) GRANULARITY 1"
    )
    assert [normalise(s) for s in place(mixed, cluster=CLUSTER)] == [
        f"ALTER TABLE {DB}.{TABLE} {ON} (DROP COLUMN IF EXISTS x)",
        f"ALTER TABLE {DB}.{LOCAL} {ON} (DROP COLUMN IF EXISTS x), (ADD INDEX i y TYPE set(8) GRANULARITY 1)",
    ]


# Tables of the shapes other migrations add (a report table, a price book), written as `tables` writes.
NEW_TABLES = [
    (
        """CREATE TABLE IF NOT EXISTS `kubenetmon`.`agent_reports` (
    `node` LowCardinality(String),
    `bootId` String,
    `seq` UInt64,
    `reportedAt` DateTime64(3),
    `flows` UInt32
)
ENGINE = ReplacingMergeTree(reportedAt)
ORDER BY (node, bootId, seq)
TTL toDate(reportedAt) + toIntervalDay(30)
SETTINGS index_granularity = 8192""",
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/kubenetmon/agent_reports_local', "
        "'{replica}', reportedAt) ORDER BY (node, bootId, seq) TTL toDate(reportedAt) + toIntervalDay(30)",
        "cityHash64(node, bootId, seq)",
    ),
    (
        "CREATE TABLE IF NOT EXISTS `kubenetmon`.`price_book` (`sku` String, `usdPerGiB` Float64, "
        "`validFrom` Date) ENGINE = ReplacingMergeTree ORDER BY sku",
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/kubenetmon/price_book_local', "
        "'{replica}') ORDER BY sku",
        "cityHash64(sku)",
    ),
    (
        "CREATE TABLE `kubenetmon`.`events` (`t` DateTime, `k` UInt8) ENGINE = MergeTree() "
        "PARTITION BY toDate(t) ORDER BY (t, k) SETTINGS index_granularity = 1024",
        "ReplicatedMergeTree('/clickhouse/tables/{shard}/kubenetmon/events_local', '{replica}') "
        "PARTITION BY toDate(t) ORDER BY (t, k) SETTINGS index_granularity = 1024",
        "cityHash64(t, k)",
    ),
]


@pytest.mark.parametrize(("statement", "engine", "sharding"), NEW_TABLES)
def test_a_table_added_by_a_later_migration_gets_the_same_treatment(
    normalise: Callable[[str], str], statement: str, engine: str, sharding: str
) -> None:
    normalise(statement)  # the single-server statement is valid to begin with
    local, public = (normalise(s) for s in place(statement, cluster=CLUSTER))
    name = statement.split("`.`")[1].split("`")[0]
    assert f"{DB}.{name}_local {ON} (" in local and f"ENGINE = {engine}" in local
    assert public == (
        f"CREATE TABLE IF NOT EXISTS {DB}.{name} {ON} AS {DB}.{name}_local "
        f"ENGINE = Distributed('{CLUSTER}', '{DB}', '{name}_local', {sharding})"
    )


def test_views_drops_and_inserts(normalise: Callable[[str], str]) -> None:
    view = (
        "CREATE VIEW IF NOT EXISTS `kubenetmon`.`cost` AS SELECT f.localApp, sum(f.bytes) * any(p.usdPerGiB) "
        "FROM `kubenetmon`.`network_flows_0_exact` AS f, `kubenetmon`.`price_book` AS p GROUP BY f.localApp"
    )
    (placed,) = place(view, cluster=CLUSTER)
    assert normalise(placed).startswith(f"CREATE VIEW IF NOT EXISTS {DB}.cost {ON} AS SELECT")
    drops = place("DROP TABLE IF EXISTS `kubenetmon`.`events` SYNC", cluster=CLUSTER)
    assert [normalise(s) for s in drops] == [
        f"DROP TABLE IF EXISTS {DB}.events {ON} SYNC",
        f"DROP TABLE IF EXISTS {DB}.events_local {ON} SYNC",
    ]
    insert = "INSERT INTO `kubenetmon`.`price_book` (sku, usdPerGiB) VALUES ('egress', 0.09)"
    assert place(insert, cluster=CLUSTER) == [insert]  # through the Distributed table


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE MATERIALIZED VIEW `kubenetmon`.`mv` TO `kubenetmon`.`t` AS SELECT 1",
        "CREATE TABLE `kubenetmon`.`m` (`x` UInt8) ENGINE = Memory",
        "CREATE TABLE `kubenetmon`.`m` (`x` UInt8) ENGINE = MergeTree ORDER BY tuple()",
        "CREATE TABLE `kubenetmon`.`m` (`x` UInt8) ENGINE = ReplicatedMergeTree ORDER BY x",
        "RENAME TABLE `kubenetmon`.`a` TO `kubenetmon`.`b`",
    ],
)
def test_a_statement_it_cannot_place_is_refused(statement: str) -> None:
    with pytest.raises(ValueError, match="--clickhouse-cluster: "):
        place(statement, cluster=CLUSTER)


def test_migrate_on_a_cluster(normalise: Callable[[str], str]) -> None:
    sent = Recorder()
    out = migrate(sent, database=DB, table=TABLE, ttl_days=30, cluster=CLUSTER)  # type: ignore[arg-type]
    assert out.applied == tuple(range(1, LATEST + 1)) and out.ttl_changed
    create_db, record, *rest = (normalise(s) for s in sent.statements)
    assert create_db == f"CREATE DATABASE IF NOT EXISTS {DB} {ON}"
    # the record of applied versions: one table replicated on every server of the cluster
    assert record.startswith(f"CREATE TABLE IF NOT EXISTS {DB}.kubenetmon_migrations {ON} (")
    assert (
        "ENGINE = ReplicatedReplacingMergeTree("
        f"'/clickhouse/kubenetmon/{CLUSTER}/{DB}/kubenetmon_migrations', '{{shard}}-{{replica}}') "
        "ORDER BY (`table`, version)"
    ) in record
    *ddl, delete = [s for s in rest if not s.startswith("INSERT")]
    # the TTL: on the tables holding the rows, the flows', the ledger's and the node rows'
    assert ddl == [normalise(s) for s in migration_statements(CLUSTER)] + [
        f"ALTER TABLE {DB}.{LOCAL} {ON} (MODIFY TTL date + toIntervalDay(30))",
        f"ALTER TABLE {DB}.{REPORTS_TABLE}_local {ON} "
        "(MODIFY TTL toDate(intervalStartTime) + toIntervalDay(30))",
        f"ALTER TABLE {DB}.{tables.node_table(TABLE)}_local {ON} (MODIFY TTL date + toIntervalDay(30))",
    ]
    inserts = [s for s in rest if s.startswith("INSERT")]
    assert len(inserts) == LATEST and all(f"INSERT INTO {DB}.kubenetmon_migrations" in s for s in inserts)
    # the price load: rows into the price table itself (no Distributed table in front), and one DELETE of
    # older loads, as on a single server: Keeper carries the mutation to every replica
    assert delete.startswith(f"ALTER TABLE {DB}.{PRICES_TABLE} (DELETE WHERE loadedAt < toDateTime64(")
    assert sent.inserts == [(PRICES_TABLE, len(pricebook.table_rows(pricebook.load())))]


def test_cluster_settings() -> None:
    base: dict[str, Any] = {"dsn": "https://ch.example:8443", "table": TABLE}
    assert ClickHouseSettings(**base, cluster="prod-eu.1").cluster == "prod-eu.1"
    with pytest.raises(ConfigError, match=r"--clickhouse-cluster \(KUBENETMON_CLICKHOUSE_CLUSTER\)"):
        ClickHouseSettings(**base, cluster="a b")
    with pytest.raises(ConfigError, match="no cluster with a chdb:// DSN"):
        ClickHouseSettings(dsn="chdb:///tmp/x", cluster=CLUSTER)


def test_inserts_on_a_cluster_wait_for_every_shard(clickhouse: Sink) -> None:
    settings = ClickHouseSettings(dsn="http://ch:8123", cluster=CLUSTER)
    wanted = Sink(settings)._insert_settings
    assert wanted["insert_distributed_sync"] == 1
    assert "insert_distributed_sync" not in Sink(ClickHouseSettings(dsn="http://ch:8123"))._insert_settings
    # a setting the engine knows (the older name of distributed_foreground_insert)
    known = clickhouse.query("SELECT name FROM system.settings WHERE name = 'insert_distributed_sync'")
    assert known.rows == [("insert_distributed_sync",)]


def test_migrate_command_refuses_a_cluster_on_chdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["clickhouse", "migrate", "--clickhouse-dsn", f"chdb://{tmp_path}/ch", "--clickhouse-cluster", "c"]
    assert cli.main(args) == 2
    assert "no cluster with a chdb:// DSN" in capsys.readouterr().err


def test_rehearsal_on_a_one_server_cluster(tmp_path: Path) -> None:
    """The real migration, writer insert, exact view and TTL path on chDB as the one shard of a cluster
    (only the DDL queue and Keeper replication taken out; see ``cluster_rehearsal``)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.writer.cluster_rehearsal", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["cluster"] == [[1]]
    assert found["first"] == {"applied": list(range(1, LATEST + 1)), "after": LATEST, "ttl": True}
    *ddl, delete = [s for s in found["sent"][2:] if not s.startswith("INSERT")]
    assert ddl == [*migration_statements(CLUSTER), *(s for t in _ttls(90) for s in place(t, cluster=CLUSTER))]
    assert _price_delete(delete)
    tables_ = found["tables"]
    assert tables_[TABLE]["engine"] == "Distributed"
    assert f"cityHash64({tables_[LOCAL]['key']})" in tables_[TABLE]["full"]
    assert (
        tables_[LOCAL]["engine"] == "ReplacingMergeTree"
        and "TTL date + toIntervalDay(90)" in (tables_[LOCAL]["full"])
    )
    assert tables_[f"{TABLE}_exact"]["engine"] == "View"
    # the column migrations reached both tables: the Distributed one has exactly the local one's columns
    assert found["columns"][TABLE] == found["columns"][LOCAL]
    assert [c for c, _ in found["columns"][TABLE] if c != "date"] == list(COLUMN_NAMES)
    # 50 rows written twice (the second time re-enriched) through the Distributed table: FINAL is exact
    assert found["inserted"] == 100 and found["local_rows"] >= 50
    assert found["exact"] == [50, found["expected_bytes"], 2]
    assert found["distributed_final"] == found["local_final"] == 50
    assert found["again"] == {"applied": [], "ttl": False}
    assert not [s for s in found["again_sent"] if "ALTER" in s or "INSERT" in s]
    assert found["ttl7"]["changed"] and "TTL date + toIntervalDay(7)" in found["ttl7"]["full"]
    assert "TTL toDate(intervalStartTime) + toIntervalDay(7)" in found["ttl7"]["ledger"]
    assert found["recorded"] == [[v] for v in range(1, LATEST + 1)]
    # the price table: one table, no local one behind a Distributed one; the cost view reads through the
    # Distributed flows table and prices every row at the list price, then at the contract's
    assert tables_[PRICES_TABLE]["engine"] == "MergeTree" and f"{PRICES_TABLE}_local" not in tables_
    assert tables_[f"{TABLE}_cost"]["engine"] == "View"
    gib = 1 << 30
    for key, out_rate in (("list_cost", 0.01), ("contract_cost", 0.004)):
        got = found[key]
        assert sum(d["bytes"] for d in got.values()) == found["expected_bytes"]
        for direction, rate in (("out", out_rate), ("in", 0.01)):
            side = got[direction]
            assert side["charge"] == ["cross-zone"] and side["entry"] == ["aws-cross-zone"]
            assert side["usd"] == pytest.approx(side["bytes"] / gib * rate)
    assert found["contract"]["changed"]
    assert [s for s in found["contract"]["sent"] if "ALTER" in s] == [found["contract"]["sent"][-1]]
    assert _price_delete(found["contract"]["sent"][-1])
    assert found["price_loads"] == [1, found["contract_rows"]]  # the older load deleted on the replica


@pytest.mark.parametrize("module", [writer_cli, replay])
def test_writer_and_replay_enriched_take_the_cluster(module: Any) -> None:
    parser = argparse.ArgumentParser()
    module.configure(parser)
    argv = ["--clickhouse-dsn", "https://ch:8443", "--clickhouse-cluster", CLUSTER]
    if module is replay:
        argv += ["--from=-1h"]
    settings = clickhouse_settings(parser.parse_args(argv))
    assert settings.cluster == CLUSTER and Sink(settings)._insert_settings["insert_distributed_sync"] == 1


@pytest.mark.parametrize("argv", [["writer"], ["replay", "enriched", "--from=-1h"]])
def test_a_cluster_on_chdb_is_one_clear_line(argv: list[str], tmp_path: Path) -> None:
    env = {"KUBENETMON_CLICKHOUSE_CLUSTER": CLUSTER, "KUBENETMON_CLICKHOUSE_DSN": f"chdb://{tmp_path}/ch"}
    done = kubenetmon(*argv, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"kubenetmon {argv[0]}: --clickhouse-cluster (KUBENETMON_CLICKHOUSE_CLUSTER): expected no cluster "
        f"with a chdb:// DSN (chDB is one embedded server), got '{CLUSTER}'"
    ]
