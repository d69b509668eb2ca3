"""``replay enriched`` against a real nats-server and chDB: reload a dropped table from the ENRICHED
stream through the writer's batching and insert path, idempotently, and only the window asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.replay.window import Window
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.replay import EnrichedReplay, replay_enriched
from kubenetmon.writer.settings import ClickHouseSettings, WriterSettings
from kubenetmon.writer.sink import Sink
from tests.support import Process, flags
from tests.support.replay import (
    INTERVAL,
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    interval_messages,
    run_cli,
    write_inventory,
    write_until_settled,
)

SETTINGS = LabelSettings(cloud="aws", region="us-west-2")
BATCHING = WriterSettings(batch_rows=1000, batch_age_s=0.2, retry_min_s=0.1, retry_max_s=0.5)
SUMS = (
    "SELECT direction, count(), sum(bytes), sum(packets) FROM kubenetmon.network_flows_0_exact "
    "GROUP BY direction ORDER BY direction"
)
APPS = (
    "SELECT toUnixTimestamp(intervalStartTime) AS t, localPod, localApp "
    "FROM kubenetmon.network_flows_0_exact ORDER BY t, localPod, direction"
)


def _enricher(broker: Broker, inventory_path: Path, *, replay: str = "") -> Enricher:
    index = Index()
    inventory.load(index, inventory_path)
    ranges = sources.load_table(sources.RangeSettings(), private=SETTINGS.private)
    return Enricher(Labeler(SETTINGS, index=index, ranges=ranges), broker=broker, max_rows=5, replay=replay)


async def _enrich(enricher: Enricher, msgs: list[Any]) -> None:
    for msg in msgs:
        for subject, payload, msg_id in enricher.enrich_message(msg):
            await enricher.broker.publish(subject, payload, msg_id=msg_id)


@pytest.fixture
def sink(clickhouse: Sink) -> Sink:
    """The flows table, migrated, in this process (``replay_enriched`` runs in this process too)."""
    return clickhouse


def _rows(sink: Sink, sql: str) -> list[tuple[Any, ...]]:
    return sink.query(sql).rows


async def test_a_dropped_table_is_reloaded_exactly_and_idempotently(
    broker: Broker,
    nats_settings: NatsSettings,
    chdb_settings: ClickHouseSettings,
    sink: Sink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = base_time()
    before = write_inventory(
        tmp_path / "before.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES]
    )
    after = write_inventory(
        tmp_path / "after.yaml", [*NODES, *cluster_pods(web0_app="frontend", created=base - 7200), *SERVICES]
    )
    msgs = interval_messages(base, 6)
    await _enrich(_enricher(broker, before), msgs)
    await _enrich(_enricher(broker, after, replay="fix"), msgs[1:4])  # a replay raw of intervals 1..3
    await write_until_settled(broker, sink, BATCHING)
    sums, apps = _rows(sink, SUMS), _rows(sink, APPS)
    assert {app for _, pod, app in apps if pod == "web-0"} == {"web", "frontend"}

    def config(window: Window, **kwargs: Any) -> EnrichedReplay:
        return EnrichedReplay(
            window=window, nats=nats_settings, clickhouse=chdb_settings, writer=BATCHING, **kwargs
        )

    everything = Window(start=base - 3600, end=base + 3600)
    sink.command("DROP TABLE kubenetmon.network_flows_0")
    assert await replay_enriched(config(everything), stop=asyncio.Event()) == 0
    report = capsys.readouterr().out
    assert "selected  9 messages, 36 rows" in report and "inserted  36 rows" in report, report
    assert _rows(sink, SUMS) == sums  # totals per direction as before the drop
    assert _rows(sink, APPS) == apps  # and the newest labels won again

    assert await replay_enriched(config(everything), stop=asyncio.Event()) == 0  # again: nothing changes
    assert _rows(sink, SUMS) == sums and _rows(sink, APPS) == apps
    sink.command("OPTIMIZE TABLE kubenetmon.network_flows_0 FINAL")
    assert _rows(sink, "SELECT count() FROM kubenetmon.network_flows_0") == [(24,)]

    # only the window asked for: intervals 4 and 5, from mid-interval 3 to past the end
    sink.command("DROP TABLE kubenetmon.network_flows_0")
    late = Window(start=base + 3 * INTERVAL + 30, end=base + 3600)
    assert await replay_enriched(config(late), stop=asyncio.Event()) == 0
    starts = (
        "SELECT DISTINCT toUnixTimestamp(intervalStartTime) AS t "
        "FROM kubenetmon.network_flows_0_exact ORDER BY t"
    )
    assert _rows(sink, starts) == [(base + 4 * INTERVAL,), (base + 5 * INTERVAL,)]


async def test_dry_run_counts_without_touching_clickhouse(
    broker: Broker,
    nats_settings: NatsSettings,
    chdb_settings: ClickHouseSettings,
    tmp_path: Path,
    spawn: Callable[..., Process],
) -> None:
    base = base_time()
    inv = write_inventory(tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES])
    await _enrich(_enricher(broker, inv), interval_messages(base, 4))
    window = ["--from", str(base + INTERVAL), "--to", str(base + 3 * INTERVAL)]
    code, out, err = await run_cli(
        spawn,
        "replay",
        "enriched",
        *window,
        "--dry-run",
        *flags(nats_settings),
        *flags(chdb_settings),
        name="dry",
    )
    assert code == 0, err
    assert "would insert  2 messages, 8 rows" in out, out
    assert "skipped       2 outside the window" in out, out
    assert not await asyncio.to_thread(Path(chdb_settings.dsn.removeprefix("chdb://")).exists)  # never opened
