"""The whole correction loop with real processes: a live enricher and writer (chDB) keep running while
``kubenetmon replay raw`` re-labels a window after an inventory fix. Labels change, per-direction totals
do not, no row is duplicated, and running it again changes nothing more."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.query.endpoint import live_endpoint
from kubenetmon.writer.query.sql import run_query
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.replay import (
    INTERVAL,
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    interval_messages,
    publish_raw,
    run_cli,
    settled,
    write_inventory,
)

Spawn = Callable[..., Process]
COMMON = ["--http-port", "-1", "--log-format", "text"]
LABEL = ["--cloud", "aws", "--region", "us-west-2"]
SUMS = (
    "SELECT direction, count(), sum(bytes), sum(packets) FROM network_flows_0_exact "
    "GROUP BY direction ORDER BY direction"
)
APPS = (
    "SELECT toUnixTimestamp(intervalStartTime) AS t, localPod, localApp, count() "
    "FROM network_flows_0_exact GROUP BY t, localPod, localApp ORDER BY t, localPod"
)


def _query(ch: ClickHouseSettings, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in run_query(ch, sql).rows]


async def test_replay_raw_relabels_rows_in_place_while_the_pipeline_runs(
    broker: Broker,
    nats_settings: NatsSettings,
    chdb_settings: ClickHouseSettings,
    tmp_path: Path,
    spawn: Spawn,
) -> None:
    base = base_time()
    objects = [*NODES, *cluster_pods(created=base - 7200), *SERVICES]
    inventory = write_inventory(tmp_path / "before.yaml", objects)
    nats = flags(nats_settings)
    writer = spawn(
        *KUBENETMON, "writer", *nats, *flags(chdb_settings), "--batch-age", "200ms", *COMMON, name="writer"
    )
    spawn(*KUBENETMON, "enricher", *nats, *LABEL, "--inventory", str(inventory), *COMMON, name="enricher")
    msgs = interval_messages(base, 6)
    await publish_raw(broker, msgs)
    path = chdb_settings.dsn.removeprefix("chdb://")
    await eventually(lambda: live_endpoint(path) is not None)

    async def written() -> bool:
        if not (await settled(broker, "enricher") and await settled(broker, "writer")):
            return False
        return _query(chdb_settings, "SELECT count() FROM network_flows_0_exact") == [(24,)]

    await eventually(written)  # 6 intervals x 2 kept records x 2 directions
    sums, apps = _query(chdb_settings, SUMS), _query(chdb_settings, APPS)
    assert {app for _, pod, app, _ in apps if pod == "web-0"} == {"web"}

    # the fix: web-0 is really the frontend; replay intervals 1..3 with the fixed inventory
    fixed = write_inventory(
        tmp_path / "after.yaml", [*NODES, *cluster_pods(web0_app="frontend", created=base - 7200), *SERVICES]
    )
    window = ["--from", str(base + INTERVAL), "--to", str(base + 4 * INTERVAL)]
    argv = ["replay", "raw", *window, *nats, *LABEL, "--inventory", str(fixed), "--run-id", "fix1"]
    code, out, err = await run_cli(spawn, *argv, name="replay")
    assert code == 0, err
    assert "published  3 ENRICHED messages (+0 already sent by this run id)" in out, out

    def relabelled() -> bool:
        rows = _query(chdb_settings, APPS)
        return {(t, app) for t, pod, app, _ in rows if pod == "web-0"} == {
            (base + k * INTERVAL, "frontend" if 1 <= k <= 3 else "web") for k in range(6)
        }

    await eventually(relabelled)
    assert _query(chdb_settings, SUMS) == sums  # totals per direction did not move
    assert _query(chdb_settings, "SELECT count() FROM network_flows_0_exact") == [(24,)]
    identities = "SELECT count(DISTINCT intervalStartTime, observerNode, flowId) FROM network_flows_0"
    assert _query(chdb_settings, identities) == [(24,)]  # replaced, not added
    after_first = _query(chdb_settings, APPS)

    # the same run again: everything is a duplicate, nothing changes
    code, out, err = await run_cli(spawn, *argv, name="again")
    assert code == 0, err
    assert "published  0 ENRICHED messages (+3 already sent by this run id)" in out, out
    await eventually(lambda: settled(broker, "writer"))
    assert _query(chdb_settings, APPS) == after_first
    assert _query(chdb_settings, SUMS) == sums

    writer.signal(signal.SIGTERM)
    assert await writer.wait() == 0
    sink = Sink(chdb_settings)  # the writer released the directory: merge everything, count physically
    try:
        sink.command("OPTIMIZE TABLE kubenetmon.network_flows_0 FINAL")
        assert sink.query("SELECT count() FROM kubenetmon.network_flows_0").rows == [(24,)]
    finally:
        sink.close()
