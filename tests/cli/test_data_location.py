"""Where the data is, as a user meets it: one ``--data-dir`` rule (and its default) for every command that
reads or writes stored data, one friendly line for a wrong path with nothing created, ``sql`` read-only
unless ``--write``, and ``clickhouse migrate`` recreating what was dropped. Each runs the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.sink import Sink
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.commands import kubenetmon

READERS = (["sql", "SELECT 1"], ["top"], ["cost"], ["check", "--from", "-1h"])
READ_ONLY_LINE = "the session is read-only: add --write to change data or schema"
WRITERS = (["clickhouse", "migrate"], ["replay", "enriched", "--from", "-1h"])


def _data_dir(path: Path) -> Path:
    """A data directory as ``kubenetmon up`` leaves it: a migrated chDB directory under ``clickhouse``."""
    sink = Sink(chdb_settings_for(path / "clickhouse"))
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
    finally:
        sink.close()
    return path


def _one_clean_line(err: str) -> str:
    assert "Traceback" not in err and "DB::Exception" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv", [*READERS, *WRITERS], ids=lambda a: " ".join(a[:2]))
def test_a_wrong_data_dir_is_one_line_and_creates_nothing(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "typo"
    run = kubenetmon(*argv, "--data-dir", str(missing))
    assert run.returncode == 2
    assert f"--data-dir {missing}: no kubenetmon data there" in _one_clean_line(run.stderr)
    assert not missing.exists()


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_every_reader_defaults_to_the_data_dir_of_up(tmp_path: Path, argv: list[str]) -> None:
    run = kubenetmon(*argv, env={"XDG_DATA_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert run.returncode == 2
    assert f"--data-dir {tmp_path}/kubenetmon: no kubenetmon data there" in _one_clean_line(run.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_chdb_dsn_without_the_database_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data")
    empty = tmp_path / "empty"
    empty.mkdir()
    run = kubenetmon("sql", "--clickhouse-dsn", f"chdb://{empty}", "SELECT 1")
    assert run.returncode == 2 and "no database kubenetmon there" in _one_clean_line(run.stderr)
    assert list(empty.iterdir()) == []
    for command in (["top"], ["clickhouse", "migrate"]):  # the data dir, not its chDB directory
        run = kubenetmon(*command, "--clickhouse-dsn", f"chdb://{data}")
        assert run.returncode == 2
        assert f"not its database: use --data-dir {data}" in _one_clean_line(run.stderr)
        assert sorted(p.name for p in data.iterdir()) == ["clickhouse"]


def test_sql_is_read_only_unless_write_and_migrate_recreates_what_was_dropped(tmp_path: Path) -> None:
    data = str(_data_dir(tmp_path / "data"))
    for statement in ("DROP TABLE network_flows_0_exact", "INSERT INTO agent_reports (node) VALUES ('x')"):
        run = kubenetmon("sql", "--data-dir", data, statement)
        assert run.returncode == 1
        assert run.stderr == f"kubenetmon sql: {READ_ONLY_LINE}\n"
    assert kubenetmon("sql", "--data-dir", data, "SELECT count() FROM network_flows_0_exact").returncode == 0

    dropped = kubenetmon("sql", "--data-dir", data, "--write", "DROP TABLE network_flows_0_exact")
    assert dropped.returncode == 0, dropped.stderr
    dropped = kubenetmon("sql", "--data-dir", data, "--write", "DROP TABLE agent_reports_exact")
    assert dropped.returncode == 0, dropped.stderr

    for reader in (["top"], ["cost"], ["sql", "SELECT count() FROM network_flows_0_exact"]):
        broken = kubenetmon(*reader, "--data-dir", data)
        assert broken.returncode == 1, reader
        assert "run `kubenetmon clickhouse migrate`" in _one_clean_line(broken.stderr), reader

    fixed = kubenetmon("clickhouse", "migrate", "--data-dir", data)
    assert fixed.returncode == 0, fixed.stderr
    assert "recreated missing: network_flows_0_exact, agent_reports_exact" in fixed.stdout
    assert "already up to date" not in fixed.stdout
    again = kubenetmon("clickhouse", "migrate", "--data-dir", data)
    assert "already up to date" in again.stdout and "recreated" not in again.stdout
    for view in ("network_flows_0_exact", "agent_reports_exact", "network_flows_0_cost"):
        read = kubenetmon("sql", "--data-dir", data, "--format", "csv", f"SELECT count() FROM {view}")
        assert (read.returncode, read.stdout) == (0, "count()\n0\n"), read.stderr


def test_readers_do_not_list_writer_only_flags() -> None:
    for command in ("sql", "top", "cost", "check"):
        shown = kubenetmon(command, "--help").stdout
        assert "--data-dir" in shown and "--clickhouse-dsn" in shown
        assert "--ttl-days" not in shown and "--clickhouse-cluster" not in shown, command
        assert "[default:" not in shown
    for command in (["writer"], ["clickhouse", "migrate"]):
        assert "--ttl-days" in kubenetmon(*command, "--help").stdout


HOLD = """
import sys
from kubenetmon.writer.sink import Sink
from kubenetmon.writer.settings import ClickHouseSettings
sink = Sink(ClickHouseSettings(dsn=sys.argv[1]))
sink.query("SELECT 1")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_directory_another_process_holds_is_one_line(tmp_path: Path) -> None:
    data = _data_dir(tmp_path / "data")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"chdb://{data}/clickhouse"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        run = kubenetmon(
            "replay", "enriched", "--data-dir", str(data), "--from", "-1h", "--nats-url", "nats://127.0.0.1:1"
        )
        assert run.returncode == 1
        line = _one_clean_line(run.stderr)
        assert f"held by another process (pid {holder.pid})" in line and "Cannot lock" not in line
    finally:
        holder.communicate(timeout=30)
