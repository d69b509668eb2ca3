"""What a person at a terminal sees, from the real command: text logs on a terminal and JSON lines
otherwise, ``--version``, CSV booleans as ``true``/``false``, costs that never read as zero, help text on
every flag with defaults written one way, and one clean line instead of a traceback."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
import uuid
from pathlib import Path

import pytest

from kubenetmon.cli import reference
from kubenetmon.shared.units import csv_cell, usd
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.sink import Sink
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.commands import KUBENETMON, clean_env, kubenetmon
from tests.support.rows import flow, insert

UNREACHABLE_NATS = ["nats", "status", "--nats-url", "nats://127.0.0.1:1", "--settle-wait", "1s"]


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run ``kubenetmon ARGS`` with stderr on a pseudo-terminal; its exit code and what it wrote there."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [*KUBENETMON, *args], stdout=subprocess.PIPE, stderr=follower, env=clean_env(), timeout=120
        )
    finally:
        os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return done.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


def test_logs_are_text_on_a_terminal_and_json_lines_otherwise() -> None:
    code, shown = _stderr_on_a_terminal(*UNREACHABLE_NATS)
    assert code == 1
    logged = [line for line in shown.splitlines() if " WARNING " in line]
    assert logged and not any(line.lstrip().startswith("{") for line in shown.splitlines()), shown
    piped = kubenetmon(*UNREACHABLE_NATS)
    lines = piped.stderr.splitlines()
    assert json.loads(lines[0])["level"] == "warning"
    assert lines[-1].startswith("kubenetmon nats status: cannot connect to nats://127.0.0.1:1")
    # the flag wins over the terminal
    code, shown = _stderr_on_a_terminal(*UNREACHABLE_NATS, "--log-format", "json")
    assert json.loads(shown.splitlines()[0])["level"] == "warning"


def test_version() -> None:
    done = kubenetmon("--version")
    assert done.returncode == 0 and done.stdout.startswith("kubenetmon ") and done.stderr == ""


def test_csv_booleans_are_true_and_false(tmp_path: Path) -> None:
    sink = Sink(chdb_settings_for(tmp_path / "data" / "clickhouse"))
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
    finally:
        sink.close()
    query = "SELECT true AS t, false AS f"
    done = kubenetmon("sql", "--data-dir", str(tmp_path / "data"), "--format", "csv", query)
    assert (done.returncode, done.stdout) == (0, "t,f\ntrue,false\n"), done.stderr
    assert [csv_cell(v) for v in (True, False, 1, "x")] == ["true", "false", 1, "x"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "$0.00"),
        (15.7, "$15.70"),
        (1234.567, "$1,234.57"),
        (0.0042, "$0.0042"),
        (0.0000073, "$0.0000073"),
        (0.00049, "$0.00049"),
        (0.005, "$0.01"),
        (1e-12, "$0.0000000000010"),
        (1e-300, "$0.000000000000000"),
        (-0.0042, "$-0.0042"),
        (float(2**64 - 1), "$18,446,744,073,709,551,616.00"),
        (float("inf"), "$inf"),
    ],
)
def test_costs_never_read_as_zero(value: float, shown: str) -> None:
    assert usd(value) == shown


def test_every_flag_has_help_and_defaults_are_written_one_way() -> None:
    for name, parser in reference._commands():
        for action in parser._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help and action.help.strip(), f"{name} {action.option_strings}"
        text = parser.format_help()
        assert "[default:" not in text, name
    check = kubenetmon("check", "--help").stdout
    assert "--format {table,json}" in check and "a table per node, or JSON per interval" in check


def test_an_agent_that_may_not_enter_its_namespace_says_so_in_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to create a namespace and setpriv to drop to another user")
    netns = f"kperm-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        done = subprocess.run(
            [
                "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *KUBENETMON, "agent",
                "--netns", netns, "--node-name", "n1", "--nats-url", "nats://127.0.0.1:1",
                "--http-port", "-1", "--state-dir", str(tmp_path / "state"),
            ],
            capture_output=True, text=True, timeout=60, env=clean_env(HOME=str(tmp_path)),
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"kubenetmon agent: --netns {netns}: cannot enter the network namespace")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_live_view_fits_an_80_column_terminal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sink = Sink(chdb_settings_for(data / "clickhouse"))
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
        now = int(time.time()) // 10 * 10
        rows = [
            flow(
                start=now - 60, local=f"shop/frontend-7d9c5b6f4-x{i}z@10.1.0.{i + 2}",
                remote=f"shop/api-5f6d8c7b9-k{i}q@10.2.0.{i + 2}", bytes=780_000 - i * 1000,
                localApp=f"frontend-{i}", remoteApp="api", localAvailabilityZone="us-east-1a",
                remoteAvailabilityZone="us-east-1b", crossZone=True,
            )
            for i in range(9)
        ]  # fmt: skip
        insert(sink, rows)
    finally:
        sink.close()
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [*KUBENETMON, "top", "--data-dir", str(data), "--by", "pod", "--watch", "1s"],
        stdin=follower, stdout=follower, stderr=follower, env=clean_env(TERM="xterm"),
    )  # fmt: skip
    os.close(follower)
    shown = b""
    try:
        deadline = time.monotonic() + 60
        while b"9 of 9 rows" not in shown and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                shown += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    table = [line for line in lines if line.startswith("shop/frontend")]
    assert len(table) >= 9, text  # one line per row
    assert all(len(line) <= 80 for line in lines), text
    assert any(line.split()[:4] == ["LOCAL", "PEER", "CLASS", "BYTES"] for line in lines), text
