"""The ledger end to end (real agents, nats-server, enricher, writer into chDB, ``kubenetmon check``):
an agent SIGKILLed for two intervals and restarted leaves its outage covered later by a catch-up report,
nothing silent; an agent stopped for good is named silent from then on; a RAW chunk deleted from the
stream before anyone read it leaves its interval partial; lost DESTROY events make their interval lossy.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.e2e.fixtures import MakePipeline
from tests.e2e.harness import Options, Pipeline
from tests.e2e.procs import KUBENETMON
from tests.fixtures.lab_kernel import wait_until

pytestmark = pytest.mark.netns
STEP = 2


def check(p: Pipeline, start: int, end: int, *nodes: str) -> tuple[int, dict[str, Any]]:
    argv = [*KUBENETMON, "check", "--clickhouse-dsn", f"chdb://{p.clickhouse_dir}", "--format", "json"]
    argv += ["--from", str(start), "--to", str(end), "--settle", "1s"]
    for node in nodes:
        argv += ["--node", node]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, doc


def states(doc: dict[str, Any], node: str) -> list[str]:
    return [v["state"] for v in doc["intervals"] if v["node"] == node]


def latest_report(p: Pipeline, node: str) -> tuple[int, int]:
    """(interval start, span start in ms) of ``node``'s newest stored report, (0, 0) if none."""
    rows = p.sql(
        "SELECT toUInt32(intervalStartTime) AS start, spanFromMs AS span FROM agent_reports_exact "
        f"WHERE node = '{node}' ORDER BY intervalStartTime DESC, spanFromMs DESC LIMIT 1"
    )
    return (int(rows[0]["start"]), int(rows[0]["span"])) if rows else (0, 0)


def aligned_after(t: float) -> int:
    return (int(t) // STEP + 1) * STEP


def pass_time(until: float, *, what: str) -> None:
    """Let the pipeline run until the clock reads ``until`` (a fault's length, not a synchronisation)."""
    wait_until(lambda: time.time() >= until, timeout=until - time.time() + 5, what=what, step=0.05)


def test_outage_is_covered_later_and_a_stopped_agent_is_silent(make_pipeline: MakePipeline) -> None:
    p = make_pipeline(Options(interval_s=STEP, poll_s=0.5))
    start = aligned_after(time.time())
    wait_until(lambda: all(latest_report(p, n)[0] >= start for n in ("node-a", "node-b")), timeout=60,
               what="both agents' first reports in the window", step=0.3)  # fmt: skip

    p.kill("agent:node-a")
    down_until = aligned_after(time.time()) + 2 * STEP  # two whole intervals without an agent
    pass_time(down_until, what="two intervals without node-a's agent")
    p.restart("agent:node-a")
    restarted_ms = int(time.time() * 1000)

    def caught_up() -> bool:  # a report after the restart whose span reaches back over the outage
        rows = p.sql(
            "SELECT count() AS n FROM agent_reports_exact WHERE node = 'node-a' "
            f"AND intervalStartTime >= toDateTime({restarted_ms // 1000 - STEP}) "
            f"AND spanFromMs < {(down_until - 2 * STEP) * 1000}"
        )
        return int(rows[0]["n"]) > 0

    wait_until(caught_up, timeout=60, what="node-a's catch-up report", step=0.3)
    p.kill("agent:node-b")  # for good
    stopped = aligned_after(time.time())
    wait_until(lambda: latest_report(p, "node-a")[0] >= stopped + 2 * STEP, timeout=60,
               what="node-a to report past node-b's end", step=0.3)  # fmt: skip
    end = latest_report(p, "node-a")[0]
    p.wait_settled()

    code, doc = check(p, start, end)
    a, b = states(doc, "node-a"), states(doc, "node-b")
    assert len(a) == len(b) == (end - start) // STEP
    assert set(a) <= {"complete", "covered later"} and a.count("covered later") >= 2, a
    last_b = max(i for i, s in enumerate(b) if s != "silent")
    assert set(b[: last_b + 1]) == {"complete"} and b[last_b + 1 :] == ["silent"] * (len(b) - last_b - 1)
    assert start + (last_b + 1) * STEP <= stopped and len(b) - last_b - 1 >= 2
    assert code == 1 and not doc["whole"] and "node-b silent" in doc["summary"]
    code, doc = check(p, start, end, "node-a")
    assert code == 0 and doc["whole"], doc["summary"]
