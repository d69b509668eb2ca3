"""The sink: DSNs and secrets, the insert path for both DSN kinds, and what each failure becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import COLUMN_NAMES
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.dsn import parse_dsn, redact
from kubenetmon.writer.flow_tables import INSERT_TYPES
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import InvalidBatch, QueryFailed, Sink, SinkUnavailable
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.holder import Holder
from tests.support.http import closed_port
from tests.support.messages import message, messages, row, total_bytes


def _insert(sink: Sink, msgs: list) -> None:  # type: ignore[type-arg]
    batch: Batch[int] = Batch(opened_at=0.0)
    for i, msg in enumerate(msgs):
        batch.add(msg, i)
    sink.insert(sink.table, batch.columns, names=COLUMN_NAMES, types=INSERT_TYPES)


# DSNs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "kind", "host", "port", "user", "password", "database", "path"),
    [
        ("http://ch:8123", "http", "ch", 8123, "", "", "", ""),
        (
            "https://bob:s%40cret@ch.example:9443/flows",
            "http",
            "ch.example",
            9443,
            "bob",
            "s@cret",
            "flows",
            "",
        ),
        ("https://ch.example", "http", "ch.example", 8443, "", "", "", ""),
        (
            "chdb:///var/lib/kubenetmon/clickhouse/",
            "chdb",
            "",
            0,
            "",
            "",
            "",
            "/var/lib/kubenetmon/clickhouse",
        ),
    ],
)
def test_dsns_parse(
    dsn: str, kind: str, host: str, port: int, user: str, password: str, database: str, path: str
) -> None:
    t = parse_dsn(dsn)
    assert (t.kind, t.host, t.port, t.user, t.password, t.database, t.path) == (
        kind,
        host,
        port,
        user,
        password,
        database,
        path,
    )
    if password:
        assert password not in t.display and "***" in t.display and password not in repr(t)


@pytest.mark.parametrize(
    "dsn",
    [
        "tcp://ch:9000",
        "http://",
        "http://ch:8123/db/extra",
        "http://ch:8123/db?secure=1",
        "chdb://relative/path",
        "chdb:///",
        "http://ch:notaport",
        "http://u:topsecret@ch:8123/db?x=1",
    ],
)
def test_bad_dsns_are_config_errors_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_dsn(dsn)
    assert "topsecret" not in str(err.value)


def test_redact() -> None:
    assert redact("http://u:p4ss@h:1/db") == "http://u:***@h:1/db"
    assert redact("http://h:1/db") == "http://h:1/db"
    assert redact("chdb:///x") == "chdb:///x"


def test_http_client_options_carry_tls_and_the_password_by_precedence(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    base: dict[str, Any] = {"dsn": "https://dsnuser:from-dsn@ch:9443/flows", "table": "t"}
    assert Sink(ClickHouseSettings(**base))._client_args()["password"] == "from-dsn"
    assert Sink(ClickHouseSettings(**base, password="from-flag"))._client_args()["password"] == "from-flag"
    settings = ClickHouseSettings(
        **base,
        password="from-flag",
        password_file=str(secret),
        user="alice",
        ca_cert="/ca.pem",
        client_cert="/c.pem",
        client_key="/k.pem",
        verify=False,
        connect_timeout_s=3.0,
        timeout_s=7.0,
    ).with_secret()
    assert "from-file" not in repr(settings)
    sink = Sink(settings)
    args = sink._client_args()
    assert args["password"] == "from-file" and args["username"] == "alice"
    assert (args["interface"], args["host"], args["port"]) == ("https", "ch", 9443)
    assert (args["ca_cert"], args["client_cert"], args["client_cert_key"], args["verify"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
        False,
    )
    assert (args["connect_timeout"], args["send_receive_timeout"]) == (3.0, 7.0)
    assert sink.database == "flows" and "database" not in args
    assert Sink(settings, use_database=True)._client_args()["database"] == "flows"
    assert Sink(ClickHouseSettings(dsn="http://ch", table="t")).database == "kubenetmon"


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password-file"):
        ClickHouseSettings(dsn="http://ch", password_file=str(tmp_path / "missing")).with_secret()


# failures --------------------------------------------------------------------------------------------


def test_refused_http_is_unavailable_and_never_shows_the_password() -> None:
    with closed_port() as port:
        sink = Sink(ClickHouseSettings(dsn=f"http://bob:hunter2pw@127.0.0.1:{port}/db", connect_timeout_s=2))
        with pytest.raises(SinkUnavailable) as err:
            sink.insert("t", [[1]], names=["a"], types=["UInt8"])
        assert "hunter2pw" not in str(err.value) and "bob:***@127.0.0.1" in str(err.value)
        with pytest.raises(SinkUnavailable):
            sink.query("SELECT 1")


def test_locked_chdb_directory_is_unavailable_until_released(tmp_path: Path) -> None:
    settings = chdb_settings_for(tmp_path / "ch")
    first = Sink(settings)
    migrate(first, database=first.database, table=first.table, ttl_days=0)
    first.close()
    with Holder(tmp_path / "ch") as holder:
        sink = Sink(settings)
        with pytest.raises(SinkUnavailable, match="held by another process"):
            _insert(sink, messages(1, 3))
        holder.release()
        _insert(sink, messages(1, 3))
        assert sink.query(f"SELECT count() FROM {sink.database}.{sink.table}").rows == [(3,)]
        sink.close()


def test_rejected_values_are_an_invalid_batch(clickhouse: Sink) -> None:
    src = "n/b/1/0/0"
    with pytest.raises(InvalidBatch) as server_side:  # the server refuses the enum value
        _insert(clickhouse, [message(src, [row(src, 0, direction="sideways")])])
    assert server_side.value.reason == "invalid_batch" and "sideways" in server_side.value.detail
    with pytest.raises(InvalidBatch):  # the client cannot encode 70000 as a UInt16 port
        _insert(clickhouse, [message(src, [row(src, 1, localPort=70000)])])
    _insert(clickhouse, [message(src, [row(src, 2)])])  # the client is still usable
    assert clickhouse.query(f"SELECT count() FROM {clickhouse.database}.{clickhouse.table}").rows == [(1,)]


def test_bad_queries_fail_without_being_transient(clickhouse: Sink) -> None:
    with pytest.raises(QueryFailed, match=r"UNKNOWN_TABLE|does not exist"):
        clickhouse.query("SELECT * FROM kubenetmon.nope")


# inserts -----------------------------------------------------------------------------------------------


def test_chdb_insert_lands_every_column_in_its_table_type(clickhouse: Sink) -> None:
    src = "node-a/boot/1/0/0"
    r = row(src, 3, direction="in", connectionFlags={"crossZone": True}, crossZone=True, localWorkload="web")
    _insert(clickhouse, [message(src, [r])])
    result = clickhouse.query(
        "SELECT date = toDate(intervalStartTime), direction, toString(localIPv4), toString(localIP), "
        "connectionFlags, crossZone, localWorkload, bytes, flowId, toUnixTimestamp(intervalStartTime) "
        f"FROM {clickhouse.database}.{clickhouse.table}"
    )
    assert result.rows == [
        (
            True,
            "in",
            "10.0.0.1",
            "::ffff:10.0.0.1",
            {"crossZone": True},
            True,
            "web",
            r["bytes"],
            r["flowId"],
            r["intervalStartTime"],
        )
    ]


def test_http_insert_against_a_real_server(clickhouse_server_settings: ClickHouseSettings) -> None:
    sink = Sink(clickhouse_server_settings)
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=1)
        msgs = messages(3, 4)
        _insert(sink, msgs)
        _insert(sink, msgs)  # redelivered: replaces
        exact = sink.query(f"SELECT count(), sum(bytes) FROM {sink.database}.{sink.table}_exact").rows
        assert exact == [(12, total_bytes(msgs))]
    finally:
        sink.close()
