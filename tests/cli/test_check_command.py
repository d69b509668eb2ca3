"""``kubenetmon check`` run as a user runs it: its exit code tells complete, incomplete, nothing to judge
and an unreadable store apart, and a window cut by settling says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kubenetmon.shared import exits
from kubenetmon.writer.flow_tables import REPORT_COLUMNS, REPORT_INSERT_TYPES, REPORTS_TABLE
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.sink import Sink
from tests.fixtures.clickhouse import chdb_settings_for
from tests.support.commands import kubenetmon
from tests.support.http import closed_port

STEP = 60


def _store(path: Path, starts: list[int], *, node: str = "n1", cut_last_at: int = 0) -> str:
    """A migrated chDB directory whose ledger holds one whole report per interval start; its DSN."""
    settings = chdb_settings_for(path)
    sink = Sink(settings)
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
        rows = [_report(node, t) for t in starts]
        if cut_last_at:
            last = max(rows, key=lambda r: int(str(r["intervalStartTime"])))
            last["spanToMs"] = cut_last_at * 1000
        if rows:
            columns = [[r[c] for r in rows] for c in REPORT_COLUMNS]
            sink.insert(REPORTS_TABLE, columns, names=REPORT_COLUMNS, types=REPORT_INSERT_TYPES)
    finally:
        sink.close()
    return settings.dsn


def _report(node: str, t: int) -> dict[str, object]:
    """One whole report of an idle interval, as the writer stores it."""
    row: dict[str, object] = dict.fromkeys(REPORT_COLUMNS, 0)
    row.update(sourceId=f"{node}/b/{t}/{t}/0", node=node, boot="b", intervalStartTime=t)
    row.update(intervalSeconds=STEP, seq=t, chunks=1, enrichedAt=1, conntrackTimestamps=1)
    row.update(spanFromMs=t * 1000 + 500, spanToMs=(t + STEP) * 1000 + 500)
    return row


def _aligned_now() -> int:
    return int(time.time()) // STEP * STEP


def test_exit_codes_complete_incomplete_nothing_unreadable(tmp_path: Path) -> None:
    now = _aligned_now()
    starts = [now - i * STEP for i in range(4, 15)]  # the last 15 minutes but the unsettled end
    dsn = _store(tmp_path / "whole", starts)
    window = ["--from", str(now - 10 * STEP), "--to", str(now - 4 * STEP)]

    ok = kubenetmon("check", "--clickhouse-dsn", dsn, *window)
    assert ok.returncode == exits.DONE, ok.stderr
    assert ok.stdout.splitlines()[-1] == "6 of 6 node-intervals complete"

    gap = _store(tmp_path / "gap", [t for t in starts if t != now - 6 * STEP])
    bad = kubenetmon("check", "--clickhouse-dsn", gap, *window)
    assert bad.returncode == exits.INCOMPLETE == 1, bad.stderr
    assert "5 of 6 node-intervals complete; n1 silent" in bad.stdout

    empty = _store(tmp_path / "empty", [])
    none = kubenetmon("check", "--clickhouse-dsn", empty, *window)
    assert none.returncode == exits.NOTHING_TO_JUDGE == 3, none.stderr
    assert none.stdout.splitlines()[-1] == "no node-interval to judge"

    with closed_port() as port:
        down = kubenetmon("check", "--clickhouse-dsn", f"http://127.0.0.1:{port}", *window)
    assert down.returncode == exits.UNREADABLE == 4
    assert down.stderr.startswith("kubenetmon check: cannot read the store: ")
    assert "Traceback" not in down.stderr and len(down.stderr.splitlines()) == 1

    helped = kubenetmon("check", "--help")
    assert "exit codes: 0 complete" in " ".join(helped.stdout.split())


def test_a_window_reaching_now_is_cut_by_settling_and_says_so(tmp_path: Path) -> None:
    now = _aligned_now()
    # Stored up to the interval before last: "now" for check comes later, perhaps a minute later on a
    # busy runner, which must not turn an interval that was not stored into a settled, silent one.
    dsn = _store(tmp_path / "ch", [now - i * STEP for i in range(2, 10)])
    run = kubenetmon("check", "--clickhouse-dsn", dsn, "--from", str(now - 8 * STEP), "--to", "now")
    assert run.returncode == exits.DONE, run.stdout + run.stderr
    assert "not settled yet" in run.stdout.splitlines()[0]
    assert "not settled yet, not judged" in run.stdout.splitlines()[-1]


def test_right_after_a_clean_stop_the_cut_interval_is_complete(tmp_path: Path) -> None:
    """The agent stopped 25 s into the current interval and published that partial interval's report."""
    now = _aligned_now()
    dsn = _store(tmp_path / "ch", [now - i * STEP for i in range(1, 10)], cut_last_at=now - STEP + 25)
    run = kubenetmon(
        "check", "--clickhouse-dsn", dsn, "--from", str(now - 9 * STEP), "--to", str(now), "--format", "json"
    )
    assert run.returncode == exits.DONE, run.stdout + run.stderr
    states = [v["state"] for v in json.loads(run.stdout)["intervals"]]
    assert states == ["complete"] * 9  # the last one too, though it ended less than --settle ago
