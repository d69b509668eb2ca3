"""``kubenetmon replay raw``: re-enrich the RAW records of a time window and republish them.

Why it exists: after a metadata or rule fix, the rows already in ClickHouse must be corrected in place.
The RAW stream keeps every record; this verb reads the window's records (see
``kubenetmon.shared.replay.window``: a record is replayed iff its interval starts in ``[--from, --to)``),
labels them with the enricher's own ``Labeler`` through the same ``Enricher.enrich_message`` the workers
use, and publishes ENRICHED with
ids ``enriched/<run id>/<raw id>[+k]``: never colliding with the live ids, the same on a rerun of the
same ``--run-id`` (the duplicate window drops what an interrupted run already sent). The rows keep their
flow ids (a hash of the RAW record, not of labels) and carry a newer ``enrichedAt``, so the live writer
replaces the old rows: labels change, totals do not. Live consumers keep running meanwhile.

Metadata: ``current`` labels with the cluster as it is now (``--inventory``, or one list from the API);
``as-of`` rebuilds the index from the META stream (``history.HistoryIndex``) so each interval sees the
metadata of its time. Known limit: a record that the new labeling drops (e.g. now an unknown direction)
leaves its old rows in place; a replay adds or replaces rows, it never deletes any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final, TextIO

from kubenetmon.enricher import plausible, sources
from kubenetmon.enricher.fill import IndexFill
from kubenetmon.enricher.history import HistoryIndex, decode
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler, Stats
from kubenetmon.enricher.settings import (
    EnricherOptions,
    LabelOptions,
    add_enricher_arguments,
    add_label_arguments,
    enricher_options,
    label_options,
)
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared import backoff, exits, localrun, runtime, schema, topology
from kubenetmon.shared.broker import Broker, Delivery, PublishResult
from kubenetmon.shared.errors import ConfigError, DecodeError, PoisonError, TransientError
from kubenetmon.shared.options import add_arguments, from_args, option
from kubenetmon.shared.replay.progress import Progress, closing_title, summary
from kubenetmon.shared.replay.run import add_run_arguments, connect, exit_code, guarded, run_id, setup_logging
from kubenetmon.shared.replay.scan import Range, scan
from kubenetmon.shared.replay.window import Window, add_window_arguments, window_from
from kubenetmon.shared.settings import (
    NatsSettings,
    add_log_arguments,
    add_nats_arguments,
    add_runtime_arguments,
    nats_settings,
    runtime_settings,
)
from kubenetmon.shared.timespec import format_time
from kubenetmon.shared.units import human_bytes

log = logging.getLogger(__name__)

METADATA: Final = ("current", "as-of")
_LIST_WAIT_S: Final = 60.0
_RETRY_MAX_S: Final = 5.0


@dataclass(frozen=True)
class RawReplay:
    """One ``replay raw`` run, as the flags describe it."""

    window: Window
    run_id: str
    nats: NatsSettings
    label: LabelOptions
    enricher: EnricherOptions
    nodes: tuple[str, ...] = ()
    metadata: str = "current"
    dry_run: bool = False


@dataclass(frozen=True)
class RawReplayFlags:
    """The flags of ``replay raw`` besides the window and the labeling."""

    nodes: tuple[str, ...] = option(
        (),
        flag="--node",
        kind="append",
        metavar="NODE",
        help="only the RAW records of this observer node (repeatable, or comma-separated)",
    )
    metadata: str = option(
        "current",
        flag="--metadata",
        native=True,
        choices=METADATA,
        help="current: label with the cluster as it is now (--inventory, or one list from the API; "
        "pods gone since are unknown). as-of: label each interval with the metadata of its time, "
        "rebuilt from the META stream the enrichers record (pods by IP over time, their labels and "
        "owners as they were; nodes and Services as last recorded)",
    )
    data_dir: str | None = option(
        None,
        flag="--data-dir",
        native=True,
        metavar="DIR",
        help="a `kubenetmon up` data directory: its NATS and the labelling flags its enricher ran with "
        "are the defaults (flags given here win, with a warning when they label differently)",
    )
    run_id: str | None = option(
        None,
        flag="--run-id",
        native=True,
        metavar="ID",
        help="tag of this run in the ENRICHED ids (default: a new one); rerun an interrupted replay "
        "with the same id so that what it already sent is dropped as a duplicate",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_window_arguments(parser)
    add_arguments(parser, RawReplayFlags, title="replay")
    add_run_arguments(parser)
    add_label_arguments(parser)
    add_enricher_arguments(parser)
    add_nats_arguments(parser, topology=False)
    add_runtime_arguments(parser)
    add_log_arguments(parser)


def from_local_run(args: argparse.Namespace, *, err: TextIO) -> None:
    """Fill what ``args`` leaves unset from the run recorded in ``--data-dir``; warn where they differ."""
    run = localrun.read(args.data_dir)
    if run is None:
        raise ConfigError(f"--data-dir {args.data_dir}: no record of a `kubenetmon up` run there")
    if args.nats_url is None:
        args.nats_url = run.nats_url
    recorded_parser = argparse.ArgumentParser(add_help=False)
    add_label_arguments(recorded_parser)
    add_enricher_arguments(recorded_parser)
    recorded, _ = recorded_parser.parse_known_args(list(run.labelling))
    for action in recorded_parser._actions:
        value = getattr(recorded, action.dest, None)
        if not action.option_strings or value in (None, False, [], ()):
            continue
        given = getattr(args, action.dest, None)
        if given in (None, False, [], ()):
            setattr(args, action.dest, value)
        elif given != value:
            err.write(
                f"kubenetmon replay raw: {action.option_strings[0]} {_shown(given)} differs from the run "
                f"recorded in {args.data_dir} ({_shown(value)}): its rows will be relabelled accordingly\n"
            )


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def main(args: argparse.Namespace) -> int:
    if args.data_dir:
        from_local_run(args, err=sys.stderr)
    flags = from_args(RawReplayFlags, args)
    config = RawReplay(
        window=window_from(args, now=time.time()),
        run_id=run_id(flags.run_id),
        nats=nats_settings(args),
        label=label_options(args),
        enricher=enricher_options(args),
        nodes=flags.nodes,
        metadata=flags.metadata,
        dry_run=bool(args.dry_run),
    )
    config.label.label()  # validate before connecting
    tty = setup_logging(args, process="replay-raw")
    return runtime.run(
        guarded("raw", lambda stop: replay_raw(config, stop=stop, tty=tty)),
        drain_timeout_s=runtime_settings(args).drain_timeout_s,
    )


async def replay_raw(config: RawReplay, *, stop: asyncio.Event, tty: bool = False) -> int:
    """Run the replay; print its summary on stdout; return the exit code."""
    started = time.monotonic()
    tally: Counter[str] = Counter()
    try:
        streams = (topology.RAW, topology.ENRICHED) + ((topology.META,) if config.metadata == "as-of" else ())
        broker = await connect(config.nats, name=f"kubenetmon-replay-raw-{config.run_id}", streams=streams)
    except TransientError as exc:
        print(f"kubenetmon replay raw: {exc}", file=sys.stderr)
        return exits.FAILED
    progress = Progress(
        f"replay raw {config.run_id}", tty=tty, describe=lambda: _brief(tally, dry_run=config.dry_run)
    )
    log.info(
        "replay raw %s: %s, metadata %s%s",
        config.run_id,
        config.window.describe(),
        config.metadata,
        " (dry run)" if config.dry_run else "",
    )
    try:
        enricher = None
        if not config.dry_run:
            enricher = await _enricher(config, broker, tally, progress=progress, stop=stop)
        progress.phase("RAW")
        for rng in _ranges(config, broker):
            async with contextlib.aclosing(
                scan(broker, rng, stop=stop, batch=config.enricher.batch, on_total=progress.add_total)
            ) as batches:
                async for batch in batches:
                    selected = _select(
                        batch, config, tally, raw_prefix=f"{broker.settings.subject_prefix}.raw."
                    )
                    if enricher is not None and selected:
                        await _republish(enricher, selected, tally, stop=stop)
                    progress.advance(len(batch))
    finally:
        progress.close()
        await broker.drain()
    interrupted = stop.is_set()
    print(_report(config, tally, interrupted=interrupted, seconds=time.monotonic() - started))
    return exit_code(interrupted=interrupted, failed=tally["failed"])


def _ranges(config: RawReplay, broker: Broker) -> list[Range]:
    window = config.window
    subjects: list[str | None] = [broker.raw_subject(node) for node in config.nodes] or [None]
    return [Range(topology.RAW, window.read_from, subject, window.read_until) for subject in subjects]


def _select(
    batch: list[Delivery], config: RawReplay, tally: Counter[str], *, raw_prefix: str
) -> list[schema.RawMessage]:
    """The decoded, plausible messages of ``batch`` whose interval starts in the window; counts the rest.

    An implausible report was dead-lettered by the live enricher: a replay must not store it either.
    """
    window, bounds, now_s = config.window, config.enricher.bounds(), time.time()
    out = []
    for delivery in batch:
        tally["read"] += 1
        try:
            msg = schema.decode_raw(delivery.data, subject=delivery.subject)
        except DecodeError:
            tally["undecodable"] += 1  # the live enricher sent it to the DLQ: `replay dlq` re-drives it
            continue
        if msg.start not in window:
            tally["outside"] += 1
            continue
        try:
            node = plausible.subject_node(delivery.subject, raw_prefix=raw_prefix)
            plausible.check(msg, bounds=bounds, now_s=now_s, subject_node=node)
        except plausible.Implausible as exc:
            tally["implausible"] += 1
            log.warning("replay: %s skipped as implausible: %s", msg.msg_id, exc)
            continue
        columns = msg.columns()
        tally["selected"] += 1
        tally["records"] += len(columns[0])
        tally["payload"] += len(delivery.data)
        tally["traffic"] += sum(columns[12]) + sum(columns[14])
        out.append(msg)
    return out


async def _republish(
    enricher: Enricher, messages: list[schema.RawMessage], tally: Counter[str], *, stop: asyncio.Event
) -> None:
    """Label and publish ``messages``; retry what NATS did not confirm until it does or ``stop``."""
    parts: list[tuple[str, bytes, str]] = []
    for msg in messages:
        try:
            parts += enricher.enrich_message(msg)
        except PoisonError as exc:
            tally["failed"] += 1
            log.error("replay: %s cannot be labelled: %s", msg.msg_id, exc)
    failures = 0
    while parts and not stop.is_set():
        broker = enricher.broker
        results = await asyncio.gather(
            *(broker.publish(subject, payload, msg_id=msg_id) for subject, payload, msg_id in parts),
            return_exceptions=True,
        )
        retry = []
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, PublishResult):
                tally["duplicate" if result.duplicate else "published"] += 1
            elif isinstance(result, PoisonError):
                tally["failed"] += 1
                log.error("replay: ENRICHED %s refused: %s", part[2], result)
            elif isinstance(result, TransientError):
                retry.append(part)
            else:
                raise result
        parts = retry
        if parts:
            failures += 1
            if backoff.now_and_then(failures, every=10):
                log.warning("replay: %d publishes failed (%d in a row); retrying", len(parts), failures)
            await runtime.sleep_or_stop(stop, backoff.exponential(failures, base_s=0.2, max_s=_RETRY_MAX_S))
    tally["unsent"] += len(parts)


# ------------------------------------------------------------------------------------------ metadata


async def _enricher(
    config: RawReplay, broker: Broker, tally: Counter[str], *, progress: Progress, stop: asyncio.Event
) -> Enricher:
    label = config.label
    ranges = await asyncio.to_thread(sources.load_table, label.range_sources(), private=label.label().private)
    if config.metadata == "as-of":
        index: Index = await _history(config, broker, progress=progress, stop=stop)
    else:
        index = await _current(config)

    def count(stats: Stats) -> None:
        tally["rows"] += stats.rows
        for reason, n in stats.dropped.items():
            tally[f"dropped {reason}"] += n

    return Enricher(
        Labeler(label.label(), index=index, ranges=ranges),
        broker=broker,
        max_rows=config.enricher.max_rows,
        replay=config.run_id,
        on_labelled=count,
    )


async def _current(config: RawReplay) -> Index:
    """Today's metadata: the inventory file, or one full list of every kind from the API server."""
    index = Index(grace_seconds=config.label.pod_grace_s)
    fill = IndexFill(index, inventory=config.label.inventory, watch=config.enricher.watch())
    await fill.start()
    try:
        await asyncio.wait_for(fill.listed.wait(), _LIST_WAIT_S)  # at once for an inventory
    except TimeoutError:
        raise ConfigError(
            f"the Kubernetes API did not list pods, nodes and services within {_LIST_WAIT_S:.0f}s"
        ) from None
    finally:
        await fill.close()
    if not config.label.inventory:
        log.info("metadata: current cluster state", extra=index.sizes())
    return index


async def _history(
    config: RawReplay, broker: Broker, *, progress: Progress, stop: asyncio.Event
) -> HistoryIndex:
    """The metadata history: every META record, applied at its observation time."""
    index = HistoryIndex(grace_seconds=config.label.pod_grace_s)
    progress.phase("metadata")
    bad = 0
    async with contextlib.aclosing(
        scan(broker, Range(topology.META), stop=stop, batch=500, on_total=progress.add_total)
    ) as batches:
        async for batch in batches:
            for delivery in batch:
                try:
                    index.record(decode(delivery.data, subject=delivery.subject))
                except DecodeError:
                    bad += 1
            progress.advance(len(batch))
    if stop.is_set():
        return index
    if index.first_at is None:
        raise ConfigError(
            "the META stream holds no metadata history (enrichers record it unless --metadata-history "
            "false); use --metadata current"
        )
    if index.first_at > config.window.start:
        log.warning(
            "metadata history starts at %s, after --from: earlier intervals use the first recorded state",
            format_time(index.first_at),
        )
    log.info(
        "metadata: history rebuilt", extra={"records": index.records, "undecodable": bad, **index.sizes()}
    )
    return index


# ------------------------------------------------------------------------------------------ reporting


def _brief(tally: Counter[str], *, dry_run: bool) -> str:
    if dry_run:
        return f"{tally['selected']} selected"
    return f"{tally['selected']} selected, {tally['published']} published"


def _report(config: RawReplay, tally: Counter[str], *, interrupted: bool, seconds: float) -> str:
    lines = [
        ("window", f"{config.window.describe()} (interval starts), metadata {config.metadata}"),
        ("read", f"{tally['read']} RAW messages"),
        (
            "would replay" if config.dry_run else "selected",
            f"{tally['selected']} messages, {tally['records']} records, "
            f"{human_bytes(tally['payload'], grouped=True)} payload, "
            f"{human_bytes(tally['traffic'], grouped=True)} of traffic",
        ),
        (
            "skipped",
            f"{tally['outside']} outside the window, {tally['undecodable']} undecodable, "
            f"{tally['implausible']} implausible",
        ),
    ]
    if not config.dry_run:
        dropped = ", ".join(f"{k[8:]} {n}" for k, n in sorted(tally.items()) if k.startswith("dropped "))
        lines += [
            ("labelled", f"{tally['rows']} rows" + (f" (records dropped: {dropped})" if dropped else "")),
            (
                "published",
                f"{tally['published']} ENRICHED messages (+{tally['duplicate']} already sent by this run id)",
            ),
        ]
    if tally["failed"] or tally["unsent"]:
        lines.append(("failed", f"{tally['failed']} refused, {tally['unsent']} not sent"))
    title = closing_title(
        f"raw {config.run_id}",
        dry_run=config.dry_run,
        interrupted=interrupted,
        seconds=seconds,
        rerun=f"rerun with --run-id {config.run_id} to finish without duplicates",
    )
    return summary(title, lines)
