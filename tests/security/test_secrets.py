"""Secrets never show: not in logs, not in metrics or probes, not in ``--help``, not in error messages.

Distinctive secret values reach the processes every way they can: ``--nats-password``, the
``KUBENETMON_NATS_PASSWORD`` variable, a NATS URL's user information, a ClickHouse DSN's password,
``--clickhouse-password``, ``KUBENETMON_CLICKHOUSE_PASSWORD`` and ``--clickhouse-password-file``.
Each process runs until ready (or, given a wrong secret, until it gives up), and everything it printed,
its ``/metrics``, ``/healthz`` and ``/readyz`` are searched for the secrets. ``--help`` of every command
and verb is rendered with the secrets in the environment (defaults come from there).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.cli.main import COMMANDS
from kubenetmon.cli.natsserver import NatsServer
from tests.fixtures.chhttp import ClickHouseHttp
from tests.support.commands import KUBENETMON, clean_env
from tests.support.secure import DEADLINE_S, Proc
from tests.support.waiting import wait_until

NATS_USER, NATS_SECRET = "kubenetmon", "nats-S3cret-Zq9vX1"
CH_USER, CH_SECRET = "kubenetmon", "ch-S3cret-Mw4pR8"
WRONG = {"nats": "nats-Wr0ng-Kp2dT5", "clickhouse": "ch-Wr0ng-Yh6sN3"}
SECRETS = (NATS_SECRET, CH_SECRET, *WRONG.values())
VERBS = {
    "nats": ("init", "status"),
    "clickhouse": ("migrate",),
    "conntrack": ("dump",),
    "replay": ("raw", "enriched", "dlq"),
}


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def servers(
    make_nats_server: Callable[..., NatsServer], clickhouse_http: Callable[..., ClickHouseHttp]
) -> tuple[NatsServer, ClickHouseHttp]:
    return make_nats_server(user=NATS_USER, password=NATS_SECRET), clickhouse_http(
        user=CH_USER, password=CH_SECRET
    )


def observe(proc: Proc, *, ready: bool) -> str:
    """Everything the process shows: once ready, its probes and metrics; then its output after it stops."""
    shown = ""
    if ready:
        wait_until(
            lambda: proc.get("/readyz")[0] == 200 or proc.popen.poll() is not None,
            timeout=DEADLINE_S,
            step=0.2,
            what=f"{proc.name} ready",
        )
        assert proc.popen.poll() is None, proc.output[-3000:]
        for path in ("/metrics", "/healthz", "/readyz"):
            status, body = proc.get(path)
            assert status == 200, (path, status)
            shown += body
        proc.popen.send_signal(signal.SIGTERM)
    code = proc.wait()
    assert (code == 0) if ready else (code != 0), (code, proc.output[-3000:])
    return shown + proc.output


def test_no_process_shows_a_secret_however_it_was_given(
    servers: tuple[NatsServer, ClickHouseHttp], spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    nats, ch = servers
    nats_flags = [
        "--nats-url",
        nats.url,
        "--nats-stream-prefix",
        "SECRETS",
        "--nats-subject-prefix",
        "secrets",
    ]
    service = ["--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json"]
    password_file = tmp_path / "ch.password"
    password_file.write_text(CH_SECRET + "\n")
    url_with_secret = nats.url.replace("nats://", f"nats://{NATS_USER}:{NATS_SECRET}@")
    dsn_with_secret = ch.url.replace("http://", f"http://{CH_USER}:{CH_SECRET}@") + "/kubenetmon"
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    user = ["--nats-user", NATS_USER]
    runs: list[tuple[str, list[str], dict[str, str], bool]] = [
        (
            "writer",
            [*nats_flags, *user, "--nats-password", NATS_SECRET, "--clickhouse-dsn", dsn_with_secret],
            {},
            True,
        ),
        (
            "writer",
            [
                *nats_flags,
                "--nats-url",
                url_with_secret,
                "--clickhouse-dsn",
                ch.url,
                "--clickhouse-user",
                CH_USER,
                "--clickhouse-password",
                CH_SECRET,
            ],
            {},
            True,
        ),
        (
            "writer",
            [*nats_flags, *user, "--clickhouse-dsn", ch.url, "--clickhouse-user", CH_USER],
            {"KUBENETMON_NATS_PASSWORD": NATS_SECRET, "KUBENETMON_CLICKHOUSE_PASSWORD": CH_SECRET},
            True,
        ),
        (
            "writer",
            [
                *nats_flags,
                *user,
                "--clickhouse-dsn",
                ch.url,
                "--clickhouse-user",
                CH_USER,
                "--clickhouse-password-file",
                str(password_file),
            ],
            {"KUBENETMON_NATS_PASSWORD": NATS_SECRET},
            True,
        ),
        ("enricher", [*nats_flags, "--nats-url", url_with_secret, "--inventory", str(inventory)], {}, True),
        (
            "enricher",
            [*nats_flags, *user, "--inventory", str(inventory)],
            {"KUBENETMON_NATS_PASSWORD": NATS_SECRET},
            True,
        ),
        # wrong secrets: refused, and the refusal does not repeat them
        (
            "writer",
            [
                *nats_flags,
                *user,
                "--clickhouse-dsn",
                ch.url.replace("http://", f"http://{CH_USER}:{WRONG['clickhouse']}@"),
            ],
            {"KUBENETMON_NATS_PASSWORD": NATS_SECRET},
            False,
        ),
        (
            "nats",
            ["init", "--connect-wait", "2s", *nats_flags, *user],
            {"KUBENETMON_NATS_PASSWORD": WRONG["nats"]},
            False,
        ),
        (
            "sql",
            [
                "--clickhouse-dsn",
                ch.url,
                "--clickhouse-user",
                CH_USER,
                "--clickhouse-password",
                WRONG["clickhouse"],
                "SELECT 1",
            ],
            {},
            False,
        ),
    ]
    for role, argv, env, ready in runs:
        extra = service if role in ("writer", "enricher") else []
        proc = spawn(role, *argv, *extra, env=env)
        shown = observe(proc, ready=ready)
        assert not leaks(shown), f"{role} {argv} showed a secret: {leaks(shown)}"
    assert ch.counts()["refused"] >= 2  # the wrong ones really were tried, and refused


def test_help_never_shows_a_secret_from_the_environment(tmp_path: Path) -> None:
    env = clean_env() | {
        "KUBENETMON_NATS_PASSWORD": NATS_SECRET,
        "KUBENETMON_NATS_TOKEN": NATS_SECRET,
        "KUBENETMON_NATS_URL": f"nats://{NATS_USER}:{NATS_SECRET}@127.0.0.1:4222",
        "KUBENETMON_CLICKHOUSE_PASSWORD": CH_SECRET,
        "KUBENETMON_CLICKHOUSE_DSN": f"https://{CH_USER}:{CH_SECRET}@127.0.0.1:8443/kubenetmon",
    }
    shown = ""
    for command in ["", *COMMANDS]:
        for verb in VERBS.get(command, ("",)):
            argv = [a for a in (command, verb) if a]
            done = subprocess.run(
                [*KUBENETMON, *argv, "--help"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert done.returncode == 0, (argv, done.stderr)
            shown += done.stdout + done.stderr
    assert "--nats-password" in shown and "--clickhouse-dsn" in shown  # the options are there...
    assert not leaks(shown)  # ...their values are not
    assert f"{NATS_USER}:***@127.0.0.1:4222" in shown  # a URL's password is masked, the rest shown
