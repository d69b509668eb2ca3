"""Faults that need more than a signal: ClickHouse refusing writes, and messages delivered twice.

``block_clickhouse``: chDB runs inside the writer process, so "ClickHouse is down" is made real in the
one way that leaves the writer running: the flows table's data directory is made immutable
(``chattr +i``), so every insert fails in the engine (it cannot create its part directory) exactly as
a server refusing writes would, until the attribute is cleared. Where the filesystem has no such
attribute, the writer is instead restarted while another process holds the chDB directory (the writer
then runs, unable to open ClickHouse, until that process lets go).

``duplicate_deliveries``: the duplicates production makes, each landing on the same row identity:
- an enricher worker stalls (SIGSTOP) holding fetched RAW messages past the ack wait; JetStream
  redelivers them to its sibling; the stalled one resumes and publishes its (now duplicate) output;
- RAW messages published again with their own ``Nats-Msg-Id`` after the duplicate window (an agent's
  retry after a long outage);
- ENRICHED messages published again under fresh ids (a re-load of ENRICHED).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from kubenetmon.shared.broker import Broker
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.e2e.harness import Pipeline

_HOLD = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
client.query("SELECT 1")
print("holding", flush=True)
sys.stdin.read()
"""


def _table_dirs(pipeline: Pipeline) -> list[str]:
    rows = pipeline.sql(
        "SELECT arrayJoin(data_paths) AS path FROM system.tables "
        "WHERE database = 'kubenetmon' AND name = 'network_flows_0'"
    )
    return [r["path"] for r in rows]


def _chattr(flag: str, paths: list[str]) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, *paths], capture_output=True).returncode == 0


def block_clickhouse(pipeline: Pipeline, seconds: float, *, how: str = "immutable") -> str:
    """Make ClickHouse refuse the writer for ``seconds``; returns how (``immutable`` or ``held``).
    Returns only once the writer has met the outage and then written again."""
    writer = pipeline.roles["writer"]
    paths = _table_dirs(pipeline)
    since = len(writer.log_path.read_bytes())
    if how == "held" or not _chattr("+i", paths):
        _hold_directory(pipeline, seconds, since=since)
        return "held"
    try:
        _wait_log(pipeline, b"ClickHouse unavailable (attempt", since=since, timeout=max(seconds, 60))
        time.sleep(seconds)  # the outage's length (the traffic goes on meanwhile)
    finally:
        _chattr("-i", paths)
    _wait_log(pipeline, b"ClickHouse is back after", since=since, timeout=60)
    return "immutable"


def _wait_log(pipeline: Pipeline, text: bytes, *, since: int, timeout: float) -> None:
    """Wait until the writer's log (from byte ``since``) says ``text``."""
    log = pipeline.roles["writer"].log_path
    wait_until(lambda: text in log.read_bytes()[since:], timeout=timeout, what=f"the writer to log {text!r}")


def _hold_directory(pipeline: Pipeline, seconds: float, *, since: int) -> None:
    """Restart the writer while another process owns the chDB directory, for ``seconds``."""
    writer = pipeline.roles["writer"]
    assert writer.stop() == 0, writer.tail()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(pipeline.clickhouse_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        writer.start()
        _wait_log(pipeline, b"ClickHouse unavailable at start", since=since, timeout=60)
        time.sleep(seconds)  # the outage's length
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(30)
    pipeline.wait_ready("writer")


async def _copies(broker: Broker, kind: str, count: int) -> list[Any]:
    source = await broker.ephemeral(kind)
    try:
        got = await source.fetch(count, 2.0)
        for delivery in got:
            await delivery.ack()
        return got
    finally:
        await source.close()


def republish(pipeline: Pipeline, *, raw: int, enriched: int) -> dict[str, int]:
    """Publish ``raw`` RAW messages again with their own ids, ``enriched`` ENRICHED under new ids."""

    async def work(broker: Broker) -> dict[str, int]:
        stored = {"raw": 0, "enriched": 0}
        for d in await _copies(broker, "raw", raw):
            result = await broker.publish(d.subject, d.data, msg_id=d.msg_id)
            stored["raw"] += not result.duplicate
        for d in await _copies(broker, "enriched", enriched):
            await broker.publish(d.subject, d.data, msg_id=f"dup-{uuid.uuid4().hex}")
            stored["enriched"] += 1
        return stored

    result: dict[str, int] = pipeline.broker_call(work)
    return result


def stall_enricher_worker(pipeline: Pipeline, *, attempts: int = 4) -> int:
    """SIGSTOP an enricher worker until JetStream redelivered what it held to its sibling, then SIGCONT
    it (it then finishes that work again). Returns 1 once that happened, 0 if it never held anything.

    Proof of the redelivery: while the worker is stopped, the consumer's ack floor stays below what was
    delivered (the worker holds a message), then moves past it (someone else acknowledged it).
    """

    async def floor(broker: Broker) -> tuple[int, int]:
        info = await broker.consumer_info("enricher")
        return info.ack_floor_stream_seq, info.delivered_stream_seq

    enricher = pipeline.roles["enricher"]
    options = pipeline.options
    for attempt in range(attempts):
        victim = enricher.wait_workers(options.enricher_workers)[attempt % options.enricher_workers]
        os.kill(victim, signal.SIGSTOP)
        try:
            stuck = _held_floor(pipeline, floor, within=3.0 * options.interval_s)
            if stuck is None:
                continue  # it held nothing this time: try again
            wait_until(
                functools.partial(_floor_above, pipeline, floor, stuck),
                timeout=options.ack_wait_s + 3.0 * options.interval_s,
                what="the stalled worker's messages to be redelivered and acknowledged",
                step=0.2,
            )
            return 1
        finally:
            os.kill(victim, signal.SIGCONT)
    return 0


def _floor_above(pipeline: Pipeline, floor: Any, stuck: int) -> bool:
    return int(pipeline.broker_call(floor)[0]) > stuck


def _held_floor(pipeline: Pipeline, floor: Any, *, within: float) -> int | None:
    """The ack floor once it stays below the delivered sequence across two reads 0.5 s apart."""
    deadline = time.monotonic() + within
    previous: tuple[int, int] | None = None
    while time.monotonic() < deadline:
        now = pipeline.broker_call(floor)
        if previous is not None and now[0] == previous[0] and now[0] < min(now[1], previous[1]):
            return int(now[0])
        previous = now
        time.sleep(0.5)  # the two reads must be apart: a sibling settles in milliseconds
    return None
