"""Schema migrations: idempotent, upgrading, kubenetmon-compatible, with the exact read path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.shared.schema import COLUMN_INDEX, COLUMN_NAMES
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.flow_tables import BASE_COLUMNS, INSERT_TYPES, REPORTS_TABLE, exact_view
from kubenetmon.writer.migrate import LATEST, current_version, migrate
from kubenetmon.writer.sink import Sink
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.messages import message, row

KUBENETMON_QUERY = (
    "SELECT localPod, remotePod, connectionClass, formatReadableSize(sum(bytes)) FROM {table} "
    "WHERE date = today() AND intervalStartTime > NOW() - INTERVAL 10 MINUTES AND direction = 'out' "
    "GROUP BY localPod, remotePod, connectionClass ORDER BY sum(bytes) DESC"
)


def _shape(sink: Sink, name: str) -> list[tuple[object, ...]]:
    return sink.query(
        f"SELECT name, type, default_expression FROM system.columns "
        f"WHERE database = '{sink.database}' AND table = '{name}' ORDER BY position"
    ).rows


def _insert(sink: Sink, rows: list[dict[str, object]], *, columns: tuple[str, ...] = COLUMN_NAMES) -> None:
    batch: Batch[int] = Batch(opened_at=0.0)
    batch.add(message(rows[0]["sourceId"], rows, columns=columns), 0)  # type: ignore[arg-type]
    idx = [COLUMN_INDEX[c] for c in columns]
    sink.insert(
        sink.table, [batch.columns[i] for i in idx], names=columns, types=[INSERT_TYPES[i] for i in idx]
    )


def test_migrating_twice_is_a_no_op(clickhouse: Sink) -> None:
    before = {name: _shape(clickhouse, name) for name in (clickhouse.table, exact_view(clickhouse.table))}
    create = clickhouse.command(f"SHOW CREATE TABLE {clickhouse.database}.{clickhouse.table}")
    again = migrate(clickhouse, database=clickhouse.database, table=clickhouse.table, ttl_days=90)
    assert again.applied == () and again.before == again.after == LATEST and not again.ttl_changed
    assert {name: _shape(clickhouse, name) for name in before} == before
    assert clickhouse.command(f"SHOW CREATE TABLE {clickhouse.database}.{clickhouse.table}") == create
    recorded = clickhouse.query(
        f"SELECT version, count() FROM {clickhouse.database}.kubenetmon_migrations FINAL "
        "GROUP BY version ORDER BY version"
    ).rows
    assert recorded == [(v, 1) for v in range(1, LATEST + 1)]


def test_the_table_keeps_kubenetmon_columns_and_adds_ours(clickhouse: Sink) -> None:
    shape = {name: (typ, default) for name, typ, default in _shape(clickhouse, clickhouse.table)}
    assert shape["date"] == ("Date", "toDate(intervalStartTime)")
    assert shape["intervalStartTime"][0] == "DateTime"
    assert shape["direction"][0] == "Enum8('out' = 1, 'in' = 2)"
    assert shape["connectionFlags"][0] == "Map(LowCardinality(String), Bool)"
    assert shape["localIPv4"][0] == shape["remoteIPv4"][0] == "IPv4"
    assert (
        shape["localIP"][0] == "IPv6" and shape["flowId"][0] == "UInt64" and shape["crossZone"][0] == "Bool"
    )
    assert [n for n in shape if n != "date"] == list(COLUMN_NAMES)
    engine = clickhouse.query(
        f"SELECT engine, sorting_key, partition_key FROM system.tables "
        f"WHERE database = '{clickhouse.database}' AND name = '{clickhouse.table}'"
    ).rows
    # the row identity comes from the RAW record only: no label in the key
    assert engine == [("ReplacingMergeTree", "intervalStartTime, observerNode, flowId", "date")]


def test_an_older_schema_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    sink = Sink(chdb_settings_for(tmp_path / "ch", database="flows", table="net"))
    try:
        first = migrate(sink, database="flows", table="net", ttl_days=30, to_version=1)
        assert first.applied == (1,) and current_version(sink, database="flows", table="net") == 1
        src = "node-a/boot/1/0/0"
        _insert(sink, [row(src, i) for i in range(4)], columns=BASE_COLUMNS)
        assert "localWorkload" not in {r[0] for r in _shape(sink, "net")}

        up = migrate(sink, database="flows", table="net", ttl_days=30)
        assert up.before == 1 and up.applied == tuple(range(2, LATEST + 1)) and up.after == LATEST
        rows = sink.query(
            "SELECT count(), sum(bytes), any(localWorkload), any(crossZone) FROM flows.net_exact"
        ).rows
        assert rows == [(4, sum(1000 + i for i in range(4)), "", False)]
        _insert(sink, [row(src, 9, localWorkload="web")])  # the new columns take writes
        assert sink.query("SELECT localWorkload FROM flows.net_exact WHERE bytes = 1009").rows == [("web",)]
    finally:
        sink.close()


@pytest.mark.parametrize("relation", ["table", "view"])
def test_kubenetmon_readme_query_runs_unchanged(clickhouse: Sink, relation: str) -> None:
    src = "node-a/boot/1/0/0"
    rows = [row(src, i, localPod="a", remotePod="b") for i in range(3)]
    rows += [row(src, i, direction="in", localPod="a", remotePod="b") for i in range(3)]
    rows += [
        row(src, 7, localPod="c", remotePod="d", connectionClass="PUBLIC_INTERNET", bytes=5 * 1024 * 1024)
    ]
    _insert(clickhouse, rows)
    name = clickhouse.table if relation == "table" else exact_view(clickhouse.table)
    result = clickhouse.query(KUBENETMON_QUERY.format(table=f"{clickhouse.database}.{name}"))
    assert result.rows == [("c", "d", "PUBLIC_INTERNET", "5.00 MiB"), ("a", "b", "INTRA_VPC", "2.93 KiB")]


def _engine(sink: Sink, name: str) -> str:
    return str(
        sink.query(
            f"SELECT engine_full FROM system.tables WHERE database = '{sink.database}' AND name = '{name}'"
        ).rows[0][0]
    )


def test_ttl_follows_the_setting_on_the_flows_and_the_ledger(clickhouse: Sink) -> None:
    def flows() -> str:
        return _engine(clickhouse, clickhouse.table)

    def ledger() -> str:
        return _engine(clickhouse, REPORTS_TABLE)

    assert "TTL date + toIntervalDay(90)" in flows()
    assert "TTL toDate(intervalStartTime) + toIntervalDay(90)" in ledger()
    args: dict[str, Any] = {"database": clickhouse.database, "table": clickhouse.table}
    assert migrate(clickhouse, **args, ttl_days=7).ttl_changed
    assert "TTL date + toIntervalDay(7)" in flows()
    assert "TTL toDate(intervalStartTime) + toIntervalDay(7)" in ledger()
    assert not migrate(clickhouse, **args, ttl_days=7).ttl_changed
    assert migrate(clickhouse, **args, ttl_days=0).ttl_changed
    assert " TTL " not in flows() and " TTL " not in ledger()
    assert not migrate(clickhouse, **args, ttl_days=0).ttl_changed


def test_a_ledger_created_without_a_ttl_gets_one(clickhouse: Sink) -> None:
    """A ledger made before it had a TTL (as every one was) is given one by the next migrate, and only
    the ledger is altered: the flows table already has its TTL."""
    clickhouse.command(f"ALTER TABLE `{clickhouse.database}`.`{REPORTS_TABLE}` REMOVE TTL")
    flows_before = _engine(clickhouse, clickhouse.table)
    args: dict[str, Any] = {"database": clickhouse.database, "table": clickhouse.table}
    assert migrate(clickhouse, **args, ttl_days=90).ttl_changed
    assert "TTL toDate(intervalStartTime) + toIntervalDay(90)" in _engine(clickhouse, REPORTS_TABLE)
    assert _engine(clickhouse, clickhouse.table) == flows_before


def test_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"chdb://{tmp_path}/ch"
    assert (
        cli.main(["clickhouse", "migrate", "--clickhouse-dsn", dsn, "--table", "flows", "--to-version", "2"])
        == 0
    )
    assert "schema version 0 -> 2; applied: 1, 2" in capsys.readouterr().out
    assert cli.main(["clickhouse", "migrate", "--clickhouse-dsn", dsn, "--table", "flows"]) == 0
    assert f"schema version 2 -> {LATEST}" in capsys.readouterr().out
    assert cli.main(["clickhouse", "migrate", "--clickhouse-dsn", dsn, "--table", "flows"]) == 0
    assert "applied: none (already up to date)" in capsys.readouterr().out
    assert cli.main(["clickhouse", "migrate", "--clickhouse-dsn", "chdb://relative", "--table", "flows"]) == 2


def test_reports_past_the_ttl_are_deleted_with_their_flows(clickhouse: Sink) -> None:
    """The engine itself expires the ledger on the flows' schedule: after a merge, the report of an
    interval older than the TTL is gone, like the flows of that day, and today's stays."""
    db = clickhouse.database
    migrate(clickhouse, database=db, table=clickhouse.table, ttl_days=30)
    old, new = "now() - INTERVAL 40 DAY", "now()"
    clickhouse.command(
        f"INSERT INTO `{db}`.`{REPORTS_TABLE}` (sourceId, node, intervalStartTime) "
        f"VALUES ('old', 'node-a', {old}), ('new', 'node-a', {new})"
    )
    clickhouse.command(
        f"INSERT INTO `{db}`.`{clickhouse.table}` (flowId, observerNode, intervalStartTime) "
        f"VALUES (1, 'node-a', {old}), (2, 'node-a', {new})"
    )
    for name in (REPORTS_TABLE, clickhouse.table):
        clickhouse.command(f"OPTIMIZE TABLE `{db}`.`{name}` FINAL")
    assert clickhouse.query(f"SELECT sourceId FROM `{db}`.`{REPORTS_TABLE}`").rows == [("new",)]
    assert clickhouse.query(f"SELECT flowId FROM `{db}`.`{clickhouse.table}`").rows == [(2,)]


def test_a_ledger_from_before_the_timestamps_column_reads_not_said_and_takes_the_new_rows(
    tmp_path: Path,
) -> None:
    sink = Sink(chdb_settings_for(tmp_path / "ch", database="flows", table="net"))
    try:
        migrate(sink, database="flows", table="net", ttl_days=0, to_version=6)
        sink.command(
            "ALTER TABLE flows.agent_reports DROP COLUMN conntrackTimestamps"
        )  # as version 6 made it
        old = (
            "INSERT INTO flows.agent_reports (sourceId, node, boot, intervalStartTime, intervalSeconds, seq, "
        )
        sink.command(old + "chunk, chunks, enrichedAt) VALUES ('n/b/60/1/0', 'n', 'b', 60, 60, 1, 0, 1, 1)")
        up = migrate(sink, database="flows", table="net", ttl_days=0)
        assert 8 in up.applied and up.after == LATEST
        sink.command(
            old
            + "chunk, chunks, enrichedAt, conntrackTimestamps) VALUES ('n/b/120/2/0', 'n', 'b', 120, 60, 2, "
            "0, 1, 1, 0)"
        )
        got = sink.query(
            f"SELECT seq, conntrackTimestamps FROM flows.{exact_view(REPORTS_TABLE)} ORDER BY seq"
        ).rows
        assert got == [(1, -1), (2, 0)]
    finally:
        sink.close()
