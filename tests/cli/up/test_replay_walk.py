"""The README's walk from the demo to a replay, as a user runs it: ``up --demo --keep-nats`` records and
prints its labelling settings and leaves NATS running on stop; ``replay raw --data-dir`` relabels with
the recorded settings (and warns when told otherwise); ``replay enriched --data-dir`` loads the result."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.support.up import Up, kubenetmon, sql
from tests.support.waiting import wait_until

S3 = (
    "SELECT toString(connectionClass) AS class, max(enrichedAt) AS at, count() AS n "
    "FROM network_flows_0_exact WHERE remoteCloudService = 's3' GROUP BY class"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_demo_then_a_replay_of_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = Up("--demo", "--data-dir", str(data), "--interval", "2", "--keep-nats")
    nats_pid = 0
    try:
        shown = up.wait_for_line("labelling: ")
        assert "--cloud aws --region us-east-1 --custom-ranges" in shown and "--cloud other" not in shown
        record = json.loads((data / "up.json").read_text())
        nats_pid = int(record["nats_pid"])
        assert nats_pid > 0 and "--custom-ranges" in record["labelling"]
        wait_until(lambda: bool(sql(data, S3)), timeout=90, what="S3 traffic stored", step=1.0)
        assert up.stop() == 0, up.output
        stopped_ns = time.time_ns()
    finally:
        up.kill_all()
    try:
        assert _alive(nats_pid), up.output
        kept = [line for line in up.out + up.err if "NATS keeps running on" in line]
        assert kept and f"`kill {nats_pid}`" in kept[0], up.output

        other = kubenetmon(
            "replay", "raw", "--data-dir", str(data), "--from", "-10m", "--cloud", "gcp", "--dry-run"
        )
        assert other.returncode == 0, other.stderr
        assert f"--cloud gcp differs from the run recorded in {data} (aws)" in other.stderr

        raw = kubenetmon("replay", "raw", "--data-dir", str(data), "--from", "-10m")
        assert raw.returncode == 0, raw.stdout + raw.stderr
        loaded = kubenetmon("replay", "enriched", "--data-dir", str(data), "--from", "-10m")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        rows = sql(data, S3)
        # relabelled after the stop, with the run's own ranges: S3 in the region stays INTRA_REGION
        assert [r["class"] for r in rows] == ["INTRA_REGION"], rows
        assert int(rows[0]["at"]) > stopped_ns, (rows, raw.stdout, raw.stderr, loaded.stdout, loaded.stderr)

        again = kubenetmon("up", "--demo", "--data-dir", str(data))
        assert again.returncode != 0 and f"(`kill {nats_pid}`)" in again.stdout + again.stderr
    finally:
        if nats_pid and _alive(nats_pid):
            os.kill(nats_pid, signal.SIGTERM)
