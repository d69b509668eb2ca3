"""The ``kubenetmon replay`` command: lazy verbs with environment defaults, time parsing, progress lines,
and an interrupted replay (SIGINT) that a rerun with the same run id finishes without duplicates."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_ORIGINAL_SUBJECT, H_REASON, H_STAGE
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.replay.progress import Progress
from kubenetmon.shared.replay.window import Window
from kubenetmon.shared.settings import NatsSettings
from tests.support import KUBENETMON, Process, eventually, flags
from tests.support.builders import message
from tests.support.replay import (
    NODES,
    SERVICES,
    base_time,
    cluster_pods,
    publish_raw,
    run_cli,
    traffic_rows,
    write_inventory,
)


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBENETMON, *argv], capture_output=True, text=True, timeout=60, env=env)


def test_replay_lists_its_verbs_and_each_verb_its_flags() -> None:
    top = _run("replay", "--help")
    assert top.returncode == 0 and all(verb in top.stdout for verb in ("raw", "enriched", "dlq"))
    raw = _run("replay", "raw", "--help")
    assert raw.returncode == 0
    assert all(
        flag in raw.stdout for flag in ("--from", "--metadata", "--run-id", "--inventory", "--dry-run")
    )
    assert "--clickhouse-dsn" in _run("replay", "enriched", "--help").stdout
    assert "--reason" in _run("replay", "dlq", "--help").stdout


def test_bad_windows_exit_2_with_the_reason() -> None:
    done = _run("replay", "raw", "--from", "yesterday-ish")
    assert done.returncode == 2 and "is not a time" in done.stderr
    done = _run("replay", "raw", "--from", "-1h", "--to", "-2h")
    assert done.returncode == 2 and "must be after --from" in done.stderr


def test_relative_times_count_back_from_now() -> None:
    from argparse import Namespace

    from kubenetmon.shared.replay.window import window_from

    args = Namespace(window_from="-2h", window_to="now", window_lead="5m", window_max_lateness="0")
    window = window_from(args, now=10_000.0)
    assert (window.start, window.end, window.read_from, window.read_until) == (2800.0, 10_000.0, 2500.0, None)
    assert 2800 in window and 10_000 not in window and 2799 not in window
    with pytest.raises(ConfigError):
        Window(start=5, end=5)


def test_progress_lines_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    progress = Progress("replay raw r1", tty=False, describe=lambda: "7 published", clock=lambda: now[0])
    progress.phase("RAW")
    progress.add_total(1000)
    with caplog.at_level(logging.INFO, logger="kubenetmon.shared.replay.progress"):
        now[0] = 110.0
        progress.advance(250)
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "replay raw r1 RAW: 250/1000 messages (25%), 25 msg/s, ETA 30s; 7 published"
    assert lines[-1].endswith("(phase done)")


async def test_an_interrupted_replay_is_finished_by_a_rerun_of_its_run_id(
    broker: Broker, nats_settings: NatsSettings, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    base = base_time(hours_ago=30)
    inv = write_inventory(tmp_path / "inv.yaml", [*NODES, *cluster_pods(created=base - 7200), *SERVICES])
    count = 1500
    await publish_raw(
        broker, [message(traffic_rows(k), node="n1", start=base + 60 * k) for k in range(count)]
    )
    argv = [
        *KUBENETMON, "replay", "raw", "--from", str(base), "--to", "now", "--inventory", str(inv),
        "--run-id", "int1", "--batch", "1", *flags(nats_settings),
    ]  # fmt: skip
    first = spawn(*argv, name="first")

    async def under_way() -> bool:
        return (await broker.stream_info("enriched")).messages >= 50

    await eventually(under_way)
    first.signal(signal.SIGINT)
    assert await first.wait() == 130
    assert "interrupted: rerun with --run-id int1" in first.out, first.out
    sent = (await broker.stream_info("enriched")).messages
    assert 0 < sent < count

    code, out, err = await run_cli(spawn, *argv[len(KUBENETMON) :], name="rerun")
    assert code == 0, err
    assert f"selected   {count} messages" in out, out
    assert (await broker.stream_info("enriched")).messages == count  # each RAW message once, none twice
    published = int(out.split("published  ")[1].split()[0])
    assert published == count - sent


async def test_flags_of_a_lazily_loaded_verb_come_from_the_environment_too(
    broker: Broker, nats_settings: NatsSettings
) -> None:
    headers = {H_REASON: "other", H_STAGE: "writer", H_ORIGINAL_SUBJECT: broker.enriched_subject("n1")}
    await broker.publish(broker.dlq_subject("writer"), b"x", msg_id="dlq/1", headers=headers)
    env = {
        **os.environ,
        "KUBENETMON_NATS_URL": nats_settings.urls[0],
        "KUBENETMON_NATS_STREAM_PREFIX": nats_settings.stream_prefix,
        "KUBENETMON_NATS_SUBJECT_PREFIX": nats_settings.subject_prefix,
        "KUBENETMON_REASON": "label",
    }
    own = ("--nats-url", "--nats-stream-prefix", "--nats-subject-prefix")
    rest = [
        f
        for i, f in enumerate(flags(nats_settings))
        if f not in own and (i == 0 or flags(nats_settings)[i - 1] not in own)
    ]
    done = await asyncio.to_thread(_run, "replay", "dlq", "--dry-run", *rest, env=env)
    assert done.returncode == 0, done.stderr
    assert "would re-drive   0 entries" in done.stdout and "1 not selected" in done.stdout, done.stdout
