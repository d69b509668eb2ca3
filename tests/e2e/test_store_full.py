"""A full JetStream store, end to end: refused, said, not ready, alerting; then resumed without restarting
nats-server, and nothing lost (the stored bytes equal the kernel's counters).

The streams get byte limits small enough to fill in seconds. With the writer down, ENRICHED fills (the
enrichers hold their RAW messages, not ready) and RAW fills (limits retention: consumed messages stay, so
the agents are refused and keep accumulating, not ready). Then the writer comes back: it drains ENRICHED
and trims what it stored, and the enrichers go on; RAW, replay's history, frees up only by age or a larger
limit, so `nats init` raises it in place, and the agents publish what they kept.
"""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.expect import differences
from tests.e2e.fixtures import MakePipeline
from tests.e2e.harness import Options, Pipeline, _probe
from tests.support.commands import KUBENETMON, flags
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns

SMALL = 32 * 1024
UDP_FLOWS = 30
"""Flows moving bytes in every interval: rows enough to fill RAW in seconds (idle reports take minutes)."""
FULL = "kubenetmon_nats_store_full"


def _full(pipeline: Pipeline, role: str) -> bool:
    return pipeline.metrics(role).get(FULL, 0.0) > 0 and _probe(pipeline.ports[role], "/readyz") == 503


def test_a_full_store_refuses_holds_and_resumes_without_a_restart_and_nothing_lost(
    cluster: Cluster, make_pipeline: MakePipeline
) -> None:
    pipeline = make_pipeline(Options(nats=(("raw_max_bytes", SMALL), ("enriched_max_bytes", SMALL))))
    web0, web1 = cluster.pods["web-0"], cluster.pods["web-1"]
    conns = [web0.tcp_connect(web1.server("tcp", family=4))]
    conns += [web0.udp_client(web1.server("udp", family=4 + 2 * (i % 2))) for i in range(UDP_FLOWS)]
    sent = [0]

    def exchange() -> None:
        sent[0] += 1
        for conn in conns:
            conn.exchange(100 + sent[0], 700 + sent[0])

    pipeline.kill("writer")
    agents = pipeline.agents()

    def everything_full() -> bool:
        exchange()  # traffic all along: the agents must keep every byte while refused
        return _full(pipeline, "enricher") and all(_full(pipeline, a) for a in agents)

    wait_until(everything_full, timeout=180, what="ENRICHED and RAW full, every role not ready", step=0.5)
    for _ in range(5):
        exchange()
    for name in ("enricher", *agents):
        log = pipeline.roles[name].log_path.read_text(errors="replace")
        assert "store full: stream" in log
    agent_log = pipeline.roles[agents[0]].log_path.read_text(errors="replace")
    assert agent_log.count("store full: stream RAW") == 1  # one line, not one per refused publish

    # the writer back: ENRICHED drained and trimmed, the enrichers take RAW again; nats-server untouched
    pipeline.roles["writer"].start()
    pipeline.wait_ready("writer")
    wait_until(
        lambda: _probe(pipeline.ports["enricher"], "/readyz") == 200, timeout=90, what="the enricher ready"
    )
    # (with a store this small, ENRICHED may fill again while the backlog goes through: each time the
    # writer trims it and the enrichers go on; only the end state is asserted below)
    # RAW frees up by age only: a larger limit, in place
    bigger = dataclasses.replace(pipeline.settings, raw_max_bytes=64 * 1024 * 1024)
    init = subprocess.run(
        [*KUBENETMON, "nats", "init", *flags(bigger)], capture_output=True, text=True, timeout=120
    )
    assert (
        init.returncode == 0 and "_RAW: updated (max_bytes: 32768 -> 67108864)" in init.stdout + init.stderr
    )
    pipeline.wait_ready(*agents, timeout=90)
    assert all(pipeline.metrics(a).get(FULL) == 0.0 for a in agents)

    exchange()
    for conn in conns:
        conn.close()
    pipeline.wait_quiet()
    pipeline.stop_agents()
    want = pipeline.expected()
    got = pipeline.wait_until_stored(want)
    diff = differences(want, got)
    assert not diff, "stored rows differ from the kernel's counters:\n" + "\n".join(diff)
    assert pipeline.backlog()["dlq"] == 0
    for role in ("enricher", "writer"):
        wait_until(
            lambda r=role: pipeline.metrics(r).get(FULL, 0.0) == 0.0, timeout=30, what=f"{role} with room"
        )
    assert _probe(pipeline.ports["enricher"], "/readyz") == 200
