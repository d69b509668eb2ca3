"""The ledger end to end (real agents, nats-server, enricher, writer into chDB, ``kubenetmon check``):
an agent SIGKILLed for two intervals and restarted leaves its outage covered later by a catch-up report,
nothing silent; an agent stopped for good is named silent from then on; a RAW chunk deleted from the
stream before anyone read it leaves its interval partial; lost DESTROY events make their interval lossy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from kubenetmon.shared.schema import decode_raw
from kubenetmon.shared.timespec import format_time
from tests.e2e.fixtures import MakePipeline
from tests.e2e.harness import Options, Pipeline
from tests.support.commands import KUBENETMON
from tests.support.waiting import wait_until

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


FLOWS = 700
"""UDP flows in one burst: rows for several 4 KiB chunks; flushing them while the agent is stopped
overruns its 64 KiB event buffer (a running agent may keep up with the flush: then nothing is lost)."""


def raw_chunks(p: Pipeline, node: str) -> list[tuple[int, Any]]:
    """(stream sequence, decoded message) of every RAW message of ``node`` in the stream."""

    async def read(broker: Any) -> list[tuple[int, Any]]:
        source = await broker.ephemeral("raw", filter_subject=broker.raw_subject(node))
        out = []
        try:
            while batch := await source.fetch(500, 0.5):
                for delivery in batch:
                    out.append((delivery.stream_seq, decode_raw(delivery.data)))
                    await delivery.ack()
        finally:
            await source.close()
        return out

    found: list[tuple[int, Any]] = p.broker_call(read)
    return found


def test_a_deleted_chunk_is_partial_and_lost_events_are_lossy(make_pipeline: MakePipeline) -> None:
    options = Options(
        interval_s=STEP, poll_s=0.5, agent_args=("--max-message-bytes", "4096", "--event-buffer", "65536")
    )
    p = make_pipeline(options)
    start = int(time.time()) // STEP * STEP  # the agents run: this interval gets its report
    p.kill("enricher")  # RAW waits in the stream: nothing reads it before the test deletes a chunk
    web0, db0 = p.cluster.pods["web-0"], p.cluster.pods["db-0"]
    server = db0.server("udp", family=4)
    for _ in range(FLOWS):
        web0.udp_client(server).exchange(20, 20)

    def multi_chunk() -> list[tuple[int, Any]]:
        return [(seq, m) for seq, m in raw_chunks(p, "node-a") if m.chunks > 1]

    wait_until(lambda: bool(multi_chunk()), timeout=60, what="a report of several chunks", step=0.5)
    node_a = p.cluster.nodes["node-a"].netns
    agent = p.roles["agent:node-a"].pid
    os.kill(agent, signal.SIGSTOP)  # a stalled agent: the flush's DESTROY events overrun its buffer
    try:
        subprocess.run(["ip", "netns", "exec", node_a, "conntrack", "-F"], check=True, capture_output=True)
    finally:
        os.kill(agent, signal.SIGCONT)
    lossy = lambda: [m for _, m in raw_chunks(p, "node-a") if m.ledger and m.ledger.events_lost]  # noqa: E731
    wait_until(lambda: bool(lossy()), timeout=60, what="a report with lost events", step=0.5)
    seq, victim = next((seq, m) for seq, m in multi_chunk() if m.chunk == 1)
    assert p.broker_call(lambda broker: broker.delete_message("raw", seq))
    end = max(m.start for _, m in raw_chunks(p, "node-a")) + STEP
    p.restart("enricher")
    p.wait_settled()

    code, doc = check(p, start, end, "node-a")
    found = {v["start"]: v for v in doc["intervals"]}
    partial = found[format_time(victim.start)]
    assert partial["state"] == "partial" and partial["missing_chunks"] == 1, partial
    lost = {m.start: m.ledger.events_lost for m in lossy()}
    for interval, count in lost.items():
        verdict = found[format_time(interval)]
        assert (verdict["state"], verdict["events_lost"]) == ("lossy", count), verdict
    assert code == 1 and not doc["whole"]
