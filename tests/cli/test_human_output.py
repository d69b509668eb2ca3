"""What a person at a terminal sees, from the real command: text logs on a terminal and JSON lines
otherwise, ``--version``, CSV booleans as ``true``/``false``, costs that never read as zero, help text on
every flag with defaults written one way, and one clean line instead of a traceback."""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kubenetmon.cli import reference
from kubenetmon.shared.units import csv_cell, usd
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.sink import Sink
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.commands import KUBENETMON, clean_env, kubenetmon

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
