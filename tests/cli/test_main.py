"""The command's entry point: a relative time may follow its flag (``--from -2h``), as the README shows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.shared import exits
from tests.support import KUBENETMON


def test_a_relative_time_is_attached_to_its_flag() -> None:
    argv = ["replay", "raw", "--from", "-6h", "--to", "-1.5h", "--node", "n1", "--lead", "-2", "-v"]
    assert cli.attach_relative_times(argv) == [
        "replay", "raw", "--from=-6h", "--to=-1.5h", "--node", "n1", "--lead=-2", "-v"
    ]  # fmt: skip
    assert cli.attach_relative_times(["--from=-6h", "--from", "now", "--from"]) == [
        "--from=-6h", "--from", "now", "--from"
    ]  # fmt: skip


def test_check_takes_from_minus_an_hour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none"
    assert cli.main(["check", "--from", "-1h", "--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err and str(missing) in err


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`kubenetmon sql ... | head`: if the reader closes the pipe, no traceback, exit 141."""
    dsn = f"chdb://{tmp_path / 'ch'}"
    migrated = subprocess.run(
        [*KUBENETMON, "clickhouse", "migrate", "--clickhouse-dsn", dsn], capture_output=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE, whatever the timing
    try:
        query = "SELECT number FROM system.numbers LIMIT 200000"  # far more than a pipe's buffer
        done = subprocess.run(
            [*KUBENETMON, "sql", "--clickhouse-dsn", dsn, query],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == exits.OUTPUT_CLOSED == 141
