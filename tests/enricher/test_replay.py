"""``replay raw`` in-process against a real nats-server: which intervals a window replays, node filters,
dry runs, and ``--metadata as-of`` against ``current`` for an IP that two pods held at different times."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubenetmon.enricher.history import Recorder
from kubenetmon.enricher.recording import MetaPublisher
from kubenetmon.enricher.replay import RawReplay, replay_raw
from kubenetmon.enricher.settings import EnricherOptions, LabelOptions
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.replay.window import Window
from kubenetmon.shared.schema import RawRow, encode_raw
from kubenetmon.shared.settings import NatsSettings
from tests.support import eventually
from tests.support.builders import message, pod, raw_row
from tests.support.replay import (
    INTERVAL,
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    interval_messages,
    publish_raw,
    replayed,
    rows_of,
    write_inventory,
)


def _config(
    nats: NatsSettings, window: Window, *, inventory: Path | None = None, **kwargs: object
) -> RawReplay:
    label = LabelOptions(cloud="aws", region="us-west-2", inventory=str(inventory or ""))
    return RawReplay(window=window, nats=nats, label=label, enricher=EnricherOptions(), **kwargs)  # type: ignore[arg-type]


async def test_a_window_that_starts_and_ends_mid_interval_replays_exactly_its_intervals(
    broker: Broker, nats_settings: NatsSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = base_time()
    inventory = write_inventory(
        tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES]
    )
    await publish_raw(broker, interval_messages(base, 6))  # intervals 0..5 seen by n1
    await publish_raw(broker, interval_messages(base, 6, node_name="n2"))  # and by n2
    late = interval_messages(base + 2 * INTERVAL, 1, seq=1)  # interval 2 again, reported late
    await publish_raw(broker, late)
    # [base + 1.5 intervals, base + 3.5 intervals): intervals 2 and 3 start inside it; 1 started before
    window = Window(start=base + 90, end=base + 210, lead_s=60)

    dry = _config(nats_settings, window, inventory=inventory, run_id="dry", nodes=("n1", "n2"), dry_run=True)
    assert await replay_raw(dry, stop=asyncio.Event()) == 0
    summary = capsys.readouterr().out
    assert "would replay  5 messages, 15 records" in summary, summary  # n1: 2 + the late one; n2: 2
    assert await replayed(broker, "dry") == []
    # everything was stored now, long after the window: a lateness bound reads none of it
    bounded = Window(start=window.start, end=window.end, lead_s=60, max_lateness_s=60)
    quick = _config(nats_settings, bounded, inventory=inventory, run_id="dry2", dry_run=True)
    assert await replay_raw(quick, stop=asyncio.Event()) == 0
    assert "would replay  0 messages" in capsys.readouterr().out

    real = _config(nats_settings, window, inventory=inventory, run_id="w1", nodes=("n1",))
    assert await replay_raw(real, stop=asyncio.Event()) == 0
    summary = capsys.readouterr().out
    assert "selected   3 messages, 9 records" in summary and "skipped    4 outside the window" in summary
    out = await replayed(broker, "w1")
    assert sorted({(m.node, m.data[m.columns.index("intervalStartTime")][0]) for m in out}) == [
        ("n1", base + 120),
        ("n1", base + 180),
    ]
    assert len(out) == 3  # the late report of interval 2 too
    assert {m.source for m in out} == {msg.msg_id for msg in interval_messages(base, 4)[2:] + late}


async def test_rerunning_a_run_id_sends_nothing_twice_and_a_new_run_supersedes(
    broker: Broker, nats_settings: NatsSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = base_time()
    inventory = write_inventory(
        tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES]
    )
    await publish_raw(broker, interval_messages(base, 3))
    window = Window(start=base, end=base + 3 * INTERVAL)
    first = _config(nats_settings, window, inventory=inventory, run_id="again")
    assert await replay_raw(first, stop=asyncio.Event()) == 0
    assert "published  3 ENRICHED messages (+0 already" in capsys.readouterr().out
    assert await replay_raw(first, stop=asyncio.Event()) == 0
    assert "published  0 ENRICHED messages (+3 already sent" in capsys.readouterr().out
    assert len(await replayed(broker, "again")) == 3
    newer = _config(nats_settings, window, inventory=inventory, run_id="later")
    assert await replay_raw(newer, stop=asyncio.Event()) == 0
    a, b = rows_of(await replayed(broker, "again")), rows_of(await replayed(broker, "later"))
    key = ("intervalStartTime", "observerNode", "flowId")
    assert sorted(tuple(r[k] for k in key) for r in a) == sorted(tuple(r[k] for k in key) for r in b)
    assert min(r["enrichedAt"] for r in b) > max(r["enrichedAt"] for r in a)  # the newer rows win


X = "10.1.5.5"


async def test_as_of_attributes_a_reused_ip_by_time_and_current_by_todays_cluster(
    broker: Broker, nats_settings: NatsSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = base_time(hours_ago=2)
    web = cluster_pods(created=base - 7200)
    old = pod("batch-a", X, node="n2", labels={"app": "batch-a"}, created=base - 7200)
    new = pod("batch-b", X, node="n2", labels={"app": "batch-b"}, created=base + 700)
    web_relabelled = cluster_pods(web0_app="frontend", created=base - 7200)[0]
    # What the enrichers recorded, through their own recording path, at these observation times:
    history = MetaPublisher(Recorder(), snapshot_s=0)
    history.observe("nodes", "LISTED", NODES, at=base - 7000.0)
    history.observe("services", "LISTED", SERVICES, at=base - 7000.0)
    history.observe("pods", "LISTED", [*web, old], at=base - 7000.0)
    history.observe("pods", "DELETED", [old], at=base + 600.0)
    history.observe("pods", "ADDED", [new], at=base + 701.0)
    history.observe("pods", "MODIFIED", [web_relabelled], at=base + 900.0)
    stop = asyncio.Event()
    task = asyncio.create_task(history.run(broker, stop=stop))
    await eventually(lambda: history.pending == 0 and history.published > 0)
    stop.set()
    await task

    def to_x(k: int) -> list[RawRow]:  # web-0 on n1 -> the reused IP
        return [raw_row("tcp", ("10.1.0.10", 33000 + k, X, 9000), (X, 9000, "10.1.0.10", 33000 + k))]

    later = message(to_x(20), node="n1", start=base + 20 * INTERVAL)  # held by batch-b, web-0 relabelled
    earlier = message(to_x(0), node="n1", start=base)  # held by batch-a
    await publish_raw(broker, [later, earlier])  # the earlier interval reported late: order must not matter
    window = Window(start=base, end=base + 21 * INTERVAL)

    as_of = _config(nats_settings, window, run_id="asof", metadata="as-of")
    assert await replay_raw(as_of, stop=asyncio.Event()) == 0, capsys.readouterr().out
    got = {
        (r["intervalStartTime"], r["remotePod"], r["localApp"])
        for r in rows_of(await replayed(broker, "asof"))
    }
    assert got == {(base, "batch-a", "web"), (base + 1200, "batch-b", "frontend")}

    today = write_inventory(tmp_path / "today.yaml", [*NODES, web_relabelled, *web[1:], new, *SERVICES])
    current = _config(nats_settings, window, inventory=today, run_id="now", metadata="current")
    assert await replay_raw(current, stop=asyncio.Event()) == 0
    got = {
        (r["intervalStartTime"], r["remotePod"], r["localApp"])
        for r in rows_of(await replayed(broker, "now"))
    }
    assert got == {(base, "", "frontend"), (base + 1200, "batch-b", "frontend")}


async def test_as_of_without_any_history_says_so(broker: Broker, nats_settings: NatsSettings) -> None:
    base = base_time()
    await publish_raw(broker, interval_messages(base, 1))
    config = _config(nats_settings, Window(start=base, end=base + INTERVAL), run_id="x", metadata="as-of")
    with pytest.raises(ConfigError, match="holds no metadata history"):
        await replay_raw(config, stop=asyncio.Event())


async def test_an_implausible_report_in_raw_is_skipped_as_the_live_enricher_refused_it(
    broker: Broker, nats_settings: NatsSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = base_time()
    inventory = write_inventory(
        tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES]
    )
    good = interval_messages(base, 2)
    [huge] = interval_messages(base + 2 * INTERVAL, 1)
    rows = huge.rows
    huge = message([rows[0]._replace(orig_bytes=(1 << 64) - 1), *rows[1:]], start=huge.start)
    [other] = interval_messages(base + 3 * INTERVAL, 1, node_name="n2")
    await publish_raw(broker, [*good, huge])
    await broker.publish(broker.raw_subject("n1"), encode_raw(other), msg_id=other.msg_id)  # n2's, on n1's
    config = _config(
        nats_settings, Window(start=base, end=base + 4 * INTERVAL), inventory=inventory, run_id="p1"
    )
    assert await replay_raw(config, stop=asyncio.Event()) == 0
    summary = capsys.readouterr().out
    assert "2 implausible" in summary and "selected   2 messages" in summary, summary
    assert {m.source for m in await replayed(broker, "p1")} == {m.msg_id for m in good}
