"""The fault suite: steady known traffic through the whole pipeline while one fault strikes at a random
moment; afterwards the bytes in ClickHouse (exact view, read with ``kubenetmon sql``) equal the kernel's
own counters for every flow and direction: nothing lost, nothing counted twice.

Scenarios: an agent SIGKILLed and restarted on its state dir; an enricher worker SIGKILLed (its pool
respawns it); the whole enricher SIGKILLed and restarted; the same two for the writer; nats-server
stopped, or SIGKILLed, and started again on its store; nats-server down past the agents' backlog cap
(reports merged); ClickHouse refusing writes while the writer runs, and ClickHouse held by another
process while the writer starts; messages delivered twice (a stalled consumer's redelivery, RAW copies
after the duplicate window, ENRICHED copies under new ids).

Each also runs on a three-node JetStream cluster (streams R3; ``@cluster`` in the test id; "nats-server
stopped" then means every member), with three faults of its own: the RAW stream's leader SIGKILLed, the
RAW leader SIGSTOPped longer than the ack wait then resumed, and a rolling restart of the three servers
under traffic. The default run (CI) takes every single-server scenario and the cluster's leader kill;
the other cluster runs are marked ``slow`` (``pytest -m slow -n 0 tests/faults``).

One scenario per test, each on a fresh pipeline (a failure cannot leak into the next one). The random
seed is printed, and ``KUBENETMON_FAULT_SEED=<seed>`` replays the same moments and amounts;
``KUBENETMON_FAULT_CLICKHOUSE_OUTAGE=<seconds>`` sets how long ClickHouse stays unavailable (short by
default so CI stays fast; a minute for the design's full claim). At the end a table shows, per scenario,
the bytes counted by the kernel and the bytes stored, per direction, and their difference.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.expect import by_direction, differences
from tests.e2e.fixtures import MakePipeline
from tests.e2e.harness import Options, Pipeline
from tests.e2e.steady import Steady
from tests.fixtures.nats_cluster import NatsCluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns


def _run_seed() -> int:
    """One seed for the whole run: parallel test workers derive it from the run's id (hex)."""
    try:
        return int(os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8], 16)
    except ValueError:
        return random.SystemRandom().randrange(1 << 32)


SEED = int(os.environ.get("KUBENETMON_FAULT_SEED") or _run_seed())
OUTAGE_S = float(os.environ.get("KUBENETMON_FAULT_CLICKHOUSE_OUTAGE") or 12)
RESULT_PROPERTY = "fault_result"
"""Each scenario records (seed, name, what, kernel bytes, stored bytes) as a property of its report, which
reaches the pytest process that prints the summary (tests/conftest.py), parallel workers or not."""


def _down_for(rng: random.Random, pipeline: Pipeline) -> None:
    """Keep a role down for a random while (the traffic goes on meanwhile; this is the fault's length)."""
    time.sleep(rng.uniform(0.5, 2.0 * pipeline.options.interval_s))


def agent_kill(p: Pipeline, rng: random.Random) -> str:
    role = rng.choice(p.agents())
    p.kill(role)
    _down_for(rng, p)
    p.restart(role)
    return f"{role} SIGKILLed, restarted on its state dir"


def enricher_worker_kill(p: Pipeline, rng: random.Random) -> str:
    victim = p.kill_worker("enricher", index=rng.randrange(p.options.enricher_workers))
    return f"enricher worker {victim} SIGKILLed, respawned by its pool"


def enricher_kill(p: Pipeline, rng: random.Random) -> str:
    p.kill("enricher")
    _down_for(rng, p)
    p.restart("enricher")
    return "enricher and its workers SIGKILLed, restarted"


def writer_worker_kill(p: Pipeline, rng: random.Random) -> str:
    victim = p.kill_worker("writer")
    return f"writer worker {victim} SIGKILLed, respawned by its pool"


def writer_kill(p: Pipeline, rng: random.Random) -> str:
    p.kill("writer")
    _down_for(rng, p)
    p.restart("writer")
    return "writer and its worker SIGKILLed, restarted"


def _servers(p: Pipeline) -> str:
    return "all three nats-servers" if isinstance(p.nats, NatsCluster) else "nats-server"


def _stores(p: Pipeline) -> str:
    return "their stores" if isinstance(p.nats, NatsCluster) else "its store"


def nats_restart(p: Pipeline, rng: random.Random) -> str:
    p.stop_nats()
    _down_for(rng, p)
    p.start_nats()
    return f"{_servers(p)} stopped and started again on {_stores(p)}"


def nats_kill(p: Pipeline, rng: random.Random) -> str:
    p.stop_nats(kill=True)
    _down_for(rng, p)
    p.start_nats()
    return f"{_servers(p)} SIGKILLed and started again on {_stores(p)}"


def nats_long_outage(p: Pipeline, rng: random.Random) -> str:
    """Down for several intervals, beyond the agents' backlog cap: their newest reports are merged."""
    p.stop_nats()
    merged = "kubenetmon_agent_backlog_merges_total"
    wait_until(
        lambda: all(p.metrics(agent).get(merged, 0) >= 2 for agent in p.agents()),
        timeout=60,
        what="both agents to merge backlog reports",
        step=0.5,
    )
    p.start_nats()
    return f"{_servers(p)} down past the agents' backlog cap (reports merged), then started again"


def clickhouse_unavailable(p: Pipeline, rng: random.Random) -> str:
    how = p.block_clickhouse(OUTAGE_S)
    return f"ClickHouse refused the writer for {OUTAGE_S:g}s ({how})"


def clickhouse_held(p: Pipeline, rng: random.Random) -> str:
    how = p.block_clickhouse(OUTAGE_S / 2, how="held")
    return f"writer restarted while another process held the chDB directory for {OUTAGE_S / 2:g}s ({how})"


def duplicates(p: Pipeline, rng: random.Random) -> str:
    done = p.duplicate_deliveries(raw=rng.randint(4, 12), enriched=rng.randint(4, 12))
    assert done["raw"] > 0 and done["enriched"] > 0, done  # real duplicates reached the streams
    return f"delivered twice: {done}"


def _nats_cluster(p: Pipeline) -> NatsCluster:
    assert isinstance(p.nats, NatsCluster), "a cluster scenario runs on Options(broker='cluster')"
    return p.nats


def nats_leader_kill(p: Pipeline, rng: random.Random) -> str:
    """The RAW stream's leader SIGKILLed: another member takes over; the victim restarts, catches up."""
    victim = _nats_cluster(p).kill_leader(p.settings, "raw")
    _down_for(rng, p)
    p.start_nats()
    return f"RAW stream leader {victim.name} SIGKILLed, a follower took over, {victim.name} restarted"


def nats_server_stall(p: Pipeline, rng: random.Random) -> str:
    """The RAW leader SIGSTOPped past the ack wait: clients leave it (pings), the others elect a leader."""
    nats = _nats_cluster(p)
    victim = nats.leader(p.settings, "raw")
    stall = p.options.ack_wait_s + rng.uniform(1.0, 2.0 * p.options.interval_s)
    victim.pause()
    try:
        time.sleep(stall)  # the stall's length (the traffic goes on meanwhile)
    finally:
        victim.resume()
    return f"RAW stream leader {victim.name} SIGSTOPped for {stall:.1f}s (ack wait {p.options.ack_wait_s:g}s)"


def nats_rolling_restart(p: Pipeline, rng: random.Random) -> str:
    """Each member in turn stopped and started again, as an upgrade does, the next once it caught up."""
    _nats_cluster(p).rolling_restart(between=lambda _: _down_for(rng, p))
    return "rolling restart of the three nats-servers"


SCENARIOS: dict[str, Callable[[Pipeline, random.Random], str]] = {
    "agent-kill": agent_kill,
    "enricher-worker-kill": enricher_worker_kill,
    "enricher-kill": enricher_kill,
    "writer-worker-kill": writer_worker_kill,
    "writer-kill": writer_kill,
    "nats-restart": nats_restart,
    "nats-kill": nats_kill,
    "nats-long-outage": nats_long_outage,
    "clickhouse-unavailable": clickhouse_unavailable,
    "clickhouse-held": clickhouse_held,
    "duplicates": duplicates,
}
CLUSTER_SCENARIOS: dict[str, Callable[[Pipeline, random.Random], str]] = {
    "nats-leader-kill": nats_leader_kill,
    "nats-server-stall": nats_server_stall,
    "nats-rolling-restart": nats_rolling_restart,
}
CLUSTER_IN_CI = "nats-leader-kill"
"""The one cluster scenario of the default run (CI's time budget); the others are ``slow``."""


def _params() -> list[Any]:
    """Every scenario on one nats-server; every one, and the cluster's own, on a three-node cluster."""
    single = [pytest.param(name, "single", id=name) for name in SCENARIOS]
    cluster = [
        pytest.param(
            name, "cluster", id=f"{name}@cluster", marks=() if name == CLUSTER_IN_CI else pytest.mark.slow
        )
        for name in (*CLUSTER_SCENARIOS, *SCENARIOS)
    ]
    return single + cluster


def summary_lines(results: list[tuple[int, str, str, dict[str, int], dict[str, int]]]) -> list[str]:
    """The table of the scenarios run (``RESULT_PROPERTY`` of their reports), printed at the end."""
    if not results:
        return []
    seeds = sorted({seed for seed, *_ in results})
    lines = [
        f"fault suite, seed {', '.join(map(str, seeds))} (KUBENETMON_FAULT_SEED=<seed> replays it)",
        f"{'scenario':<32}{'direction':>10}{'kernel bytes':>16}{'stored bytes':>16}{'difference':>12}",
    ]
    for _, name, _, kernel, stored in results:
        for direction in ("out", "in"):
            k, s = kernel[direction], stored[direction]
            lines.append(f"{name:<32}{direction:>10}{k:>16,}{s:>16,}{s - k:>+12,}")
    lines += ["faults:", *(f"  {name}: {what}" for _, name, what, _, _ in results)]
    return lines


def _total(pipeline: Pipeline) -> int:
    return sum(b for b, _ in pipeline.stored().values())


OPTIONS = {
    "duplicates": Options(duplicate_window_s=1.0),  # copies published seconds later are not deduplicated
    "nats-long-outage": Options(agent_args=("--max-backlog-reports", "2")),
}


@pytest.mark.parametrize(("scenario", "broker"), _params())
def test_no_byte_lost_or_doubled(
    scenario: str,
    broker: str,
    cluster: Cluster,
    make_pipeline: MakePipeline,
    record_property: Callable[[str, object], None],
) -> None:
    rng = random.Random(f"{SEED}/{scenario}")
    print(f"seed {SEED} (KUBENETMON_FAULT_SEED={SEED} replays it), scenario {scenario} on {broker}")
    steady = Steady(cluster, rng).prepare()
    pipeline = make_pipeline(dataclasses.replace(OPTIONS.get(scenario, Options()), broker=broker))
    fault = SCENARIOS.get(scenario) or CLUSTER_SCENARIOS[scenario]
    steady.open().start()
    try:
        wait_until(lambda: _total(pipeline) > 0, timeout=60, what="the first rows", step=0.5)
        time.sleep(rng.uniform(0, 2.0 * pipeline.options.interval_s))  # a random moment to strike
        what = fault(pipeline, rng)
        print(what)
        after = _total(pipeline)
        wait_until(lambda: _total(pipeline) > after, timeout=120, what="rows stored after it", step=0.5)
    finally:
        steady.stop()
    assert not steady.errors, steady.errors
    pipeline.wait_quiet()
    pipeline.stop_agents()

    want = pipeline.expected()
    got = pipeline.wait_until_stored(want)
    name = scenario if broker == "single" else f"{scenario}@{broker}"
    record_property(RESULT_PROPERTY, (SEED, name, what, by_direction(want), by_direction(got)))
    diff = differences(want, got)
    assert not diff, f"{scenario}: stored rows differ from the kernel's counters:\n" + "\n".join(diff)
    # 7 long-lived flows (3 seen by both nodes, 4 by one) and the short ones (all seen by both nodes), with
    # 2 directions each; a short UDP flow whose source port came round again is one conntrack, one flow
    short = {(f.proto, f.family, f.sport, f.dst, f.dport) for f in steady.short}
    assert steady.short and len(want) == 20 + 4 * len(short)
    print(f"{scenario}: {len(steady.short)} short flows ({len(short)} distinct) besides the 7 long-lived")
    assert pipeline.backlog()["dlq"] == 0
    written, stored = _written_twice(pipeline, scenario, stored=sum(b for b, _ in got.values()))
    if scenario == "duplicates":
        assert written > stored  # bytes really were written twice, and the row identity absorbed them


def _written_twice(pipeline: Pipeline, scenario: str, *, stored: int) -> tuple[float, int]:
    """Flow bytes the writer inserted (its counter; reset when the whole writer restarts) and stored."""
    [table] = pipeline.sql(
        "SELECT count() AS n, count() - uniqExact(intervalStartTime, observerNode, flowId) AS twice "
        "FROM network_flows_0"
    )
    written = pipeline.metrics("writer").get("kubenetmon_writer_flow_bytes_written_total", 0.0)
    print(
        f"{scenario}: flow totals exact; rows in the table {table['n']}, not merged away yet "
        f"{table['twice']}; flow bytes inserted {written:,.0f}, stored once {stored:,}"
    )
    return written, stored
