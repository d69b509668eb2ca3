"""The writer and ``sql`` against ClickHouse over HTTPS, with the password and the CA from files.

The server is ``tests.fixtures.chhttp``: ClickHouse's HTTP interface (auth, TLS, Native inserts) in
front of chDB. Refused credentials stop the writer at once with one clear line (exit 2, no respawn, a
handful of refused requests, nothing acknowledged); an untrusted server certificate is an outage it
reports and retries, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.chhttp import ClickHouseHttp
from tests.support import eventually, flags
from tests.support.commands import KUBENETMON
from tests.support.messages import messages, total_bytes
from tests.support.secure import DEADLINE_S, Proc
from tests.support.waiting import wait_until
from tests.support.writer import publish, settled, writer_stats

USER = "kubenetmon"
PASSWORD = "ch-Pw-Wq71zB"


def https_server(clickhouse_http: Callable[..., ClickHouseHttp], certs: Path) -> ClickHouseHttp:
    return clickhouse_http(
        user=USER, password=PASSWORD, cert=str(certs / "server.pem"), key=str(certs / "server.key")
    )


def secret_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clickhouse.password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def target(server: ClickHouseHttp, certs: Path, password_file: Path, *, ca: str = "ca.pem") -> list[str]:
    return [
        "--clickhouse-dsn",
        f"{server.url}/kubenetmon",
        "--clickhouse-user",
        USER,
        "--clickhouse-password-file",
        str(password_file),
        "--clickhouse-ca-cert",
        str(certs / ca),
    ]


def writer_argv(nats: NatsSettings, ch: list[str]) -> list[str]:
    return [
        "writer",
        *flags(nats),
        *ch,
        "--batch-age",
        "200ms",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--log-format",
        "json",
        "--retry-min",
        "100ms",
        "--retry-max",
        "500ms",
    ]


async def test_the_writer_and_sql_over_https_with_the_password_from_a_file(
    broker: Broker,
    nats_settings: NatsSettings,
    clickhouse_http: Callable[..., ClickHouseHttp],
    certs: Path,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    server = https_server(clickhouse_http, certs)
    ch = target(server, certs, secret_file(tmp_path, PASSWORD))
    writer = spawn(*writer_argv(nats_settings, ch))
    msgs = messages(6, 25)
    await publish(broker, msgs)

    await eventually(lambda: settled(broker), within=120)
    query = "SELECT count() AS n, sum(bytes) AS b FROM kubenetmon.network_flows_0_exact"
    argv = [*KUBENETMON, "sql", *ch, "--format", "json", query]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 150, "b": total_bytes(msgs)}]
    writer.popen.send_signal(signal.SIGTERM)
    assert writer.wait() == 0
    assert PASSWORD not in writer.output + done.stdout + done.stderr
    assert server.counts()["refused"] == 0


async def test_refused_credentials_stop_the_writer_with_one_clear_line(
    broker: Broker,
    nats_settings: NatsSettings,
    clickhouse_http: Callable[..., ClickHouseHttp],
    certs: Path,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    server = https_server(clickhouse_http, certs)
    await publish(broker, messages(2, 5))
    wrong = "not-" + PASSWORD
    writer = spawn(*writer_argv(nats_settings, target(server, certs, secret_file(tmp_path, wrong))))
    assert writer.wait() == 2, writer.output[-3000:]
    errors = [r for r in writer.records() if r["level"] in ("error", "critical")]
    assert len(errors) == 1 and "ClickHouse refused the credentials of user 'kubenetmon'" in errors[0]["msg"]
    assert "exc" not in errors[0]  # a message, not a traceback
    assert not any("respawning" in str(r["msg"]) for r in writer.records())
    assert server.counts()["refused"] <= 2  # asked once (the client's own retry aside), not in a loop
    stats = await writer_stats(broker)
    assert stats.num_pending + stats.num_ack_pending == 2  # nothing was acknowledged
    assert wrong not in writer.output and PASSWORD not in writer.output


async def test_an_untrusted_server_certificate_is_reported_and_retried(
    nats_settings: NatsSettings,
    clickhouse_http: Callable[..., ClickHouseHttp],
    certs: Path,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    server = https_server(clickhouse_http, certs)
    ch = target(server, certs, secret_file(tmp_path, PASSWORD), ca="other-ca.pem")
    writer = spawn(*writer_argv(nats_settings, ch))

    def reported() -> bool:
        return any(
            "ClickHouse unavailable at start (attempt 1)" in str(r["msg"])
            and "CERTIFICATE_VERIFY_FAILED" in str(r["msg"])
            for r in writer.records()
        )

    wait_until(reported, timeout=DEADLINE_S, step=0.2, what="the certificate failure reported")
    assert writer.get("/readyz")[0] == 503 and writer.popen.poll() is None
    writer.popen.send_signal(signal.SIGTERM)
    assert writer.wait() == 0
    assert server.counts()["requests"] == 0  # the TLS handshake failed: no request was ever sent
    assert PASSWORD not in writer.output
