"""``kubenetmon replay enriched``: re-insert the ENRICHED rows of a time window into ClickHouse.

Why it exists: the ENRICHED stream keeps every row the writers inserted, for its retention period. If
the table was dropped, truncated or restored from an old backup, this verb brings the window back:
it migrates the schema first (so a dropped table is created again), reads the window's messages
(see ``shared.replay.window``: selected by the rows' interval start, which all rows of one message
share), and inserts them exactly as the writer does: the writer's ``Batch`` puts the columns in table
order and the writer's insert loop (``insert``) sends them with the writer's types, retrying while
ClickHouse is unavailable. It is idempotent: every row lands on its own row identity
(``intervalStartTime``, ``observerNode``, ``flowId``) with its own ``enrichedAt``, so rows already
present, or inserted twice, collapse; if the window holds both a row and its re-enrichment by ``replay
raw``, the newer version wins, as it did before.

A message ClickHouse refuses is isolated by splitting the batch (the same loop), counted and reported
(it was refused live too and is in the DLQ); the replay does not dead-letter it again. With a
``chdb://`` target the directory must not be held by a running writer (chDB allows one process per
directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

from kubenetmon.shared import exits, localrun, runtime, topology
from kubenetmon.shared.broker import Delivery
from kubenetmon.shared.errors import DecodeError, TransientError
from kubenetmon.shared.replay.progress import Progress, closing_title, summary
from kubenetmon.shared.replay.run import add_run_arguments, connect, exit_code, guarded, setup_logging
from kubenetmon.shared.replay.scan import Range, scan
from kubenetmon.shared.replay.window import Window, add_window_arguments, window_from
from kubenetmon.shared.schema import decode_enriched
from kubenetmon.shared.settings import (
    NatsSettings,
    add_log_arguments,
    add_nats_arguments,
    add_runtime_arguments,
    nats_settings,
    runtime_settings,
)
from kubenetmon.shared.units import human_bytes
from kubenetmon.writer.batcher import Batch, Part
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.insert import insert_all, insert_batch
from kubenetmon.writer.location import add_target_arguments, target_settings
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import (
    ClickHouseSettings,
    WriterSettings,
    add_writer_arguments,
    writer_settings,
)
from kubenetmon.writer.sink import InvalidBatch, Sink, SinkUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrichedReplay:
    """One ``replay enriched`` run, as the flags describe it."""

    window: Window
    nats: NatsSettings
    clickhouse: ClickHouseSettings
    writer: WriterSettings
    dry_run: bool = False


def configure(parser: argparse.ArgumentParser) -> None:
    add_window_arguments(parser)
    add_run_arguments(parser)
    add_target_arguments(parser, writes=True)
    add_writer_arguments(parser)
    add_nats_arguments(parser, topology=False)
    add_runtime_arguments(parser)
    add_log_arguments(parser)


def main(args: argparse.Namespace) -> int:
    clickhouse = target_settings(args, creates=True)
    target = parse_dsn(clickhouse.dsn)
    run = localrun.read(os.path.dirname(target.path)) if target.kind == "chdb" else None
    if run is not None and args.nats_url is None:  # the NATS of the `up` run that owns the directory
        args.nats_url = run.nats_url
    config = EnrichedReplay(
        window=window_from(args, now=time.time()),
        nats=nats_settings(args),
        clickhouse=clickhouse,
        writer=writer_settings(args),
        dry_run=bool(args.dry_run),
    )
    tty = setup_logging(args, process="replay-enriched")
    return runtime.run(
        guarded("enriched", lambda stop: replay_enriched(config, stop=stop, tty=tty)),
        drain_timeout_s=runtime_settings(args).drain_timeout_s,
    )


async def replay_enriched(config: EnrichedReplay, *, stop: asyncio.Event, tty: bool = False) -> int:
    """Run the replay; print its summary on stdout; return the exit code."""
    started = time.monotonic()
    sink = None if config.dry_run else Sink(config.clickhouse)
    try:
        if sink is not None:
            await asyncio.to_thread(_prepare, sink, config)
        broker = await connect(config.nats, name="kubenetmon-replay-enriched", streams=(topology.ENRICHED,))
    except TransientError as exc:
        hint = " (a writer holds this chDB directory: stop it first)" if "held by" in str(exc) else ""
        print(f"kubenetmon replay enriched: {exc}{hint}", file=sys.stderr)
        if sink is not None:
            await asyncio.to_thread(sink.close)
        return exits.FAILED
    tally: Counter[str] = Counter()
    loader = _Loader(sink, config.writer, tally, stop=stop)
    progress = Progress("replay enriched", tty=tty, describe=lambda: f"{tally['inserted']} rows inserted")
    window = config.window
    rng = Range(topology.ENRICHED, window.read_from, None, window.read_until)
    try:
        progress.phase("ENRICHED")
        async with contextlib.aclosing(scan(broker, rng, stop=stop, on_total=progress.add_total)) as batches:
            async for batch in batches:
                for delivery in batch:
                    await loader.add(delivery, window)
                progress.advance(len(batch))
        await loader.flush()
    finally:
        progress.close()
        await broker.drain()
        if sink is not None:
            await asyncio.to_thread(sink.close)
    interrupted = stop.is_set()
    print(_report(config, tally, interrupted=interrupted, seconds=time.monotonic() - started))
    return exit_code(interrupted=interrupted, failed=tally["rejected"] + tally["unwritten"])


def _prepare(sink: Sink, config: EnrichedReplay) -> None:
    sink.connect()
    out = migrate(
        sink,
        database=sink.database,
        table=sink.table,
        ttl_days=config.clickhouse.ttl_days,
        cluster=config.clickhouse.cluster,
    )
    if out.applied:
        log.info("schema created or upgraded", extra={"applied": list(out.applied)})


class _Loader:
    """Selects messages of the window and inserts them in batches of ``batch_rows`` rows."""

    def __init__(
        self, sink: Sink | None, settings: WriterSettings, tally: Counter[str], *, stop: asyncio.Event
    ):
        self.sink = sink
        self.settings = settings
        self.tally = tally
        self.stop = stop
        self.batch: Batch[int] = Batch(opened_at=0.0)

    async def add(self, delivery: Delivery, window: Window) -> None:
        tally = self.tally
        tally["read"] += 1
        try:
            message = decode_enriched(delivery.data, subject=delivery.subject, share=True)  # read only
        except DecodeError:
            tally["undecodable"] += 1
            return
        columns = dict(zip(message.columns, message.data, strict=True))
        starts = columns.get("intervalStartTime") or ([message.report.start] if message.report else [])
        if not starts:
            tally["empty"] += 1
            return
        if starts[0] not in window:
            tally["outside"] += 1
            return
        tally["selected"] += 1
        tally["rows"] += message.row_count
        tally["payload"] += len(delivery.data)
        tally["traffic"] += sum(columns.get("bytes") or ())
        if self.sink is None:
            return
        self.batch.add(message, delivery.stream_seq, size=len(delivery.data))
        if self.batch.rows >= self.settings.batch_rows:
            await self.flush()

    async def flush(self) -> None:
        batch, self.batch = self.batch, Batch(opened_at=0.0)
        if self.sink is None or (batch.rows == 0 and not batch.report_columns()):
            return
        await insert_all(batch, outcomes=self, settings=self.settings, stop=self.stop, drain_s=0.0)

    # the insert loop's outcomes (``insert.Outcomes``): counted, never dead-lettered again

    async def insert(self, batch: Batch[int]) -> None:
        assert self.sink is not None  # a dry run inserts nothing
        await asyncio.to_thread(insert_batch, self.sink, batch, batch.report_columns())

    async def written(self, batch: Batch[int]) -> None:
        self.tally["inserted"] += batch.rows
        log.debug("inserted %d rows of %d messages", batch.rows, batch.messages)

    async def refused(self, part: Part[int], exc: InvalidBatch) -> None:
        self.tally["rejected"] += 1
        log.error("ClickHouse refused ENRICHED #%d: %s", part.owner, exc.detail[:300])

    async def unwritten(self, batches: list[Batch[int]], exc: SinkUnavailable) -> None:
        self.tally["unwritten"] += sum(b.rows for b in batches)
        log.error("ClickHouse unavailable while stopping; %s", exc)

    def retrying(self, reason: str) -> None:
        """Not counted: the summary reports outcomes, not attempts."""


def _report(config: EnrichedReplay, tally: Counter[str], *, interrupted: bool, seconds: float) -> str:
    target = "" if config.dry_run else f" into {config.clickhouse.table}"
    lines = [
        ("window", f"{config.window.describe()} (interval starts)"),
        ("read", f"{tally['read']} ENRICHED messages"),
        (
            "would insert" if config.dry_run else "selected",
            f"{tally['selected']} messages, {tally['rows']} rows, "
            f"{human_bytes(tally['payload'], grouped=True)} payload, "
            f"{human_bytes(tally['traffic'], grouped=True)} of traffic",
        ),
        ("skipped", f"{tally['outside']} outside the window, {tally['undecodable']} undecodable"),
    ]
    if not config.dry_run:
        lines.append(("inserted", f"{tally['inserted']} rows{target} (row identity: duplicates collapse)"))
    if tally["rejected"] or tally["unwritten"]:
        lines.append(
            ("failed", f"{tally['rejected']} messages refused, {tally['unwritten']} rows not written")
        )
    title = closing_title("enriched", dry_run=config.dry_run, interrupted=interrupted, seconds=seconds)
    return summary(title, lines)
