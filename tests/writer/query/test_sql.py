"""``kubenetmon sql`` and the owner's read-only endpoint: targets, formats, and what may not get through."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetmon.shared.errors import ConfigError
from kubenetmon.writer.migrate import LATEST
from kubenetmon.writer.query.endpoint import Endpoint, QueryServer, ask, endpoint_file, live_endpoint
from kubenetmon.writer.query.sql import configure, render, run_query, target_settings
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import QueryFailed, QueryResult, Sink, SinkUnavailable


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args([*argv, "SELECT 1"])


def test_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "clickhouse" / "metadata" / "kubenetmon").mkdir(parents=True)
    settings = target_settings(_args("--data-dir", str(tmp_path / "data")))
    assert settings.dsn == f"chdb://{tmp_path}/data/clickhouse"
    assert target_settings(_args("--clickhouse-dsn", "http://ch:8123", "--database", "f")).database == "f"
    with pytest.raises(ConfigError, match="not both"):
        target_settings(_args("--data-dir", "x", "--clickhouse-dsn", "http://ch"))
    # neither flag: the data directory `kubenetmon up` uses by default
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ConfigError, match=f"--data-dir {tmp_path}/xdg/kubenetmon: no kubenetmon data there"):
        target_settings(_args())
    (tmp_path / "xdg" / "kubenetmon" / "clickhouse" / "metadata" / "kubenetmon").mkdir(parents=True)
    assert target_settings(_args()).dsn == f"chdb://{tmp_path}/xdg/kubenetmon/clickhouse"
    # a chDB directory without the database, or the data directory itself as a DSN: one line, nothing made
    with pytest.raises(ConfigError, match=r"a kubenetmon data directory, not its database: use --data-dir"):
        target_settings(_args("--clickhouse-dsn", f"chdb://{tmp_path}/xdg/kubenetmon"))
    with pytest.raises(ConfigError, match=r"no database kubenetmon there$"):
        target_settings(_args("--clickhouse-dsn", f"chdb://{tmp_path}/empty"))
    assert not (tmp_path / "empty").exists()


def test_formats() -> None:
    result = QueryResult(["pod", "bytes", "flags"], [("a", 1536, {"crossZone": True}), ("bb", 7, None)])
    out = io.StringIO()
    render(result, fmt="table", out=out)
    assert out.getvalue().splitlines() == [
        "pod  bytes  flags",
        "---  -----  -------------------",
        'a     1536  {"crossZone": true}',
        "bb       7  NULL",
    ]
    out = io.StringIO()
    render(result, fmt="json", out=out)
    assert json.loads(out.getvalue())[0] == {"pod": "a", "bytes": 1536, "flags": {"crossZone": True}}
    out = io.StringIO()
    render(result, fmt="csv", out=out)
    assert out.getvalue().splitlines() == ["pod,bytes,flags", 'a,1536,"{""crossZone"": true}"', "bb,7,NULL"]


def test_direct_reads_return_plain_values(clickhouse: Sink, chdb_settings: ClickHouseSettings) -> None:
    clickhouse.close()
    result = run_query(
        chdb_settings,
        "SELECT toDate('2024-05-06') d, toIPv4('10.1.2.3') ip, 5 n, version "
        "FROM kubenetmon_migrations ORDER BY version LIMIT 1",
    )
    assert result == QueryResult(["d", "ip", "n", "version"], [("2024-05-06", "10.1.2.3", 5, 1)])


def test_the_endpoint_answers_reads_and_refuses_writes(
    clickhouse: Sink, chdb_settings: ClickHouseSettings
) -> None:
    path = chdb_settings.dsn.removeprefix("chdb://")
    server = QueryServer(path, lambda: Sink(chdb_settings, use_database=True))
    server.start()
    try:
        found = live_endpoint(path)
        assert found is not None and found.port == server.port and found.pid == os.getpid()
        assert oct(endpoint_file(path).stat().st_mode & 0o777) == "0o600"
        got = ask(found, "SELECT count(), toIPv6('::1') FROM kubenetmon_migrations")
        assert got == QueryResult(["count()", "toIPv6('::1')"], [(LATEST, "::1")])
        for statement in (
            "DROP TABLE network_flows_0",
            "INSERT INTO network_flows_0 (bytes) VALUES (1)",
            "SET readonly = 0",
        ):
            with pytest.raises(QueryFailed, match="readonly"):
                ask(found, statement)
        with pytest.raises(QueryFailed, match=r"UNKNOWN_TABLE|does not exist"):
            ask(found, "SELECT * FROM nope")
        with pytest.raises(SinkUnavailable, match="forbidden"):
            ask(Endpoint(found.pid, found.port, "wrong-token"), "SELECT 1")
        assert clickhouse.query("SELECT count() FROM kubenetmon.network_flows_0").rows == [(0,)]
    finally:
        server.stop()
    assert not endpoint_file(path).exists() and live_endpoint(path) is None


def test_a_dead_owner_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    endpoint_file(str(tmp_path)).write_text(json.dumps({"pid": int(dead.stdout), "port": 1, "token": "t"}))
    assert live_endpoint(str(tmp_path)) is None
    endpoint_file(str(tmp_path)).write_text("not json")
    assert live_endpoint(str(tmp_path)) is None


def test_missing_data_dir_is_a_clear_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubenetmon.cli.main import main

    missing = tmp_path / "nothing-here"
    assert main(["sql", "--data-dir", str(missing), "SELECT 1"]) == 2
    assert "no kubenetmon data there" in capsys.readouterr().err
    assert not missing.exists()
