"""``kubenetmon enricher``: a supervisor and W enricher processes sharing the durable ``enricher`` consumer.

Each worker process: load the cloud ranges (missing sources degrade, never block), fill its index (a
static ``--inventory``, list+watch threads, or with ``--metadata-source meta`` the META stream from
its latest snapshot, see ``metafeed``), connect to NATS and ensure the topology, report ready once the
index is listed (or built from META), then consume RAW until SIGTERM and drain. Side tasks refresh the ranges,
prune the index and publish gauges. This module wires settings to parts; the work is in ``worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Final

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher import metrics as m
from kubenetmon.enricher.history import Recorder
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.metafeed import MetaFeed
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.enricher.recording import MetaPublisher
from kubenetmon.enricher.settings import (
    EnricherOptions,
    HistoryOptions,
    LabelOptions,
    SourceOptions,
    add_enricher_arguments,
    add_history_arguments,
    add_label_arguments,
    add_source_arguments,
    enricher_options,
    history_options,
    label_options,
    source_options,
)
from kubenetmon.enricher.watch import LISTED, KubeWatch, Update, apply
from kubenetmon.enricher.worker import STAGE, Enricher
from kubenetmon.shared import logs, runtime
from kubenetmon.shared.broker import Broker, preflight
from kubenetmon.shared.consumer import consume
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.options import require_readable
from kubenetmon.shared.pool import Ready, supervise
from kubenetmon.shared.settings import (
    HttpSettings,
    NatsSettings,
    RuntimeSettings,
    add_http_arguments,
    add_log_arguments,
    add_nats_arguments,
    add_pool_arguments,
    add_runtime_arguments,
    http_settings,
    log_settings,
    nats_settings,
    pool_settings,
    runtime_settings,
)

log = logging.getLogger(__name__)

_CONNECT_ATTEMPT_S: Final = 5.0
_RETRY_S: Final = 1.0
_HOUSEKEEPING_S: Final = 15.0


@dataclass(frozen=True)
class EnricherConfig:
    """Everything a worker process needs (picklable: it crosses the spawn)."""

    nats: NatsSettings
    label: LabelOptions
    enricher: EnricherOptions
    runtime: RuntimeSettings
    http: HttpSettings
    history: HistoryOptions = field(default_factory=HistoryOptions)
    source: SourceOptions = field(default_factory=SourceOptions)


def configure(parser: argparse.ArgumentParser) -> None:
    add_label_arguments(parser)
    add_enricher_arguments(parser)
    add_source_arguments(parser)
    add_history_arguments(parser)
    add_nats_arguments(parser)
    add_pool_arguments(parser)
    add_runtime_arguments(parser)
    add_http_arguments(parser)
    add_log_arguments(parser)


def config_from(args: argparse.Namespace) -> EnricherConfig:
    config = EnricherConfig(
        nats=nats_settings(args),
        label=label_options(args),
        enricher=enricher_options(args),
        history=history_options(args),
        source=source_options(args),
        runtime=runtime_settings(args),
        http=http_settings(args),
    )
    config.label.label()  # validate now, in the supervisor, so a bad flag fails before any spawn
    preflight(config.nats)
    if config.source.metadata_source == "meta" and config.label.inventory:
        raise ConfigError("--inventory and --metadata-source meta exclude each other: choose one source")
    files = [("--inventory", config.label.inventory), ("--kubeconfig", config.enricher.kubeconfig)]
    files += [("--custom-ranges", path) for path in config.label.custom_ranges]
    require_readable(files)
    return config


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    logs.setup(log_settings(args), process="enricher")
    return supervise(
        "kubenetmon.enricher.cli:work",
        settings=config,
        pool=pool_settings(args),
        runtime=config.runtime,
        http=config.http,
        logs=log_settings(args),
        name="enricher",
    )


def work(config: EnricherConfig, ready: Ready) -> int:
    """A worker process (the pool's target)."""
    return runtime.run(
        lambda stop: serve(config, ready=ready, stop=stop), drain_timeout_s=config.runtime.drain_timeout_s
    )


async def serve(config: EnricherConfig, *, ready: Ready, stop: asyncio.Event) -> int:
    index = Index(grace_seconds=config.label.pod_grace_s)
    labeler = Labeler(config.label.label(), index=index, ranges=await _load_ranges(config.label))
    listed = asyncio.Event()
    from_meta = config.source.metadata_source == "meta"
    history = (
        MetaPublisher(Recorder(), snapshot_s=config.history.snapshot_s)
        if config.history.enabled and not from_meta  # reading META, there is nothing new to record
        else None
    )
    kube = None if from_meta else await _fill_index(index, config, listed, history)
    broker: Broker | None = None
    try:
        broker = await connect_broker(config.nats, name=ready.name, stop=stop)
        if broker is None:
            return 0
        async with runtime.RootTasks(stop) as tasks:
            if from_meta:
                tasks.start("metadata-feed", MetaFeed(index).follow(broker, stop=stop, caught_up=listed))
            if await _wait_ready(listed, stop):
                enricher = Enricher(labeler, broker=broker, max_rows=config.enricher.max_rows)
                ready()
                log.info("enriching", extra={"pid": os.getpid(), **index.sizes()})
                tasks.start(
                    "consume",
                    consume(
                        broker,
                        consumer=STAGE,
                        handler=enricher.handle,
                        stop=stop,
                        batch=config.enricher.batch,
                        fetch_timeout=config.enricher.fetch_timeout_s,
                        stage=STAGE,
                    ),
                )
                tasks.start("housekeeping", _housekeeping(index, kube, stop=stop))
                if history is not None:
                    tasks.start("metadata-history", history.run(broker, stop=stop))
                if config.label.ranges_refresh_s > 0 and any(sources.is_url(s) for s in config.label.ranges):
                    tasks.start("ranges", _refresh_ranges(labeler, config.label, stop=stop))
        ready(False)
        return tasks.exit_code
    finally:
        if kube is not None:
            await asyncio.to_thread(kube.close)
        if broker is not None:
            await broker.drain()


async def _load_ranges(options: LabelOptions) -> PrefixTable[Range]:
    """Load in a thread (downloads, ~50k prefixes); failures are counted and skipped."""
    report = sources.LoadReport()
    table = await asyncio.to_thread(
        sources.load_table, options.range_sources(), private=options.label().private, report=report
    )
    for source in report.failed:
        m.RANGE_FAILURES.labels(source).inc()
    for source in report.cached:
        m.RANGE_CACHED.labels(source).inc()
    m.RANGE_PREFIXES.set(table.prefixes)
    return table


async def _fill_index(
    index: Index, config: EnricherConfig, listed: asyncio.Event, history: MetaPublisher | None
) -> KubeWatch | None:
    """A static inventory, or watcher threads whose updates are applied on this event loop.

    ``listed`` is set once every kind was listed (at once for an inventory). Every update also goes
    to ``history`` (the metadata history recorded on META), if there is one.
    """
    if config.label.inventory:
        at = time.time()
        await asyncio.to_thread(inventory.load, index, config.label.inventory, now=at)
        if history is not None:
            objects = await asyncio.to_thread(inventory.read, config.label.inventory)
            for kind, objs in objects.items():
                history.observe(kind, LISTED, objs, at=at)
        listed.set()
        return None
    loop = asyncio.get_running_loop()

    def on_loop(update: Update) -> None:
        apply(index, update)
        if history is not None:
            history.observe(update.kind, update.event, update.objects, at=update.at)
        if index.ready and not listed.is_set():
            listed.set()

    def deliver(update: Update) -> None:  # called in watcher threads: hand over, never touch the index
        loop.call_soon_threadsafe(on_loop, update)

    return KubeWatch(config.enricher.watch(), deliver).start()


async def _wait_ready(listed: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until every kind was listed; False if stopped first."""
    waiting = [asyncio.ensure_future(listed.wait()), asyncio.ensure_future(stop.wait())]
    try:
        done, _ = await asyncio.wait(waiting, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            log.warning("still waiting for the first list of every kind")
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in waiting:
            future.cancel()
    if not listed.is_set():
        return False
    m.INDEX_READY.set(1)
    return True


async def connect_broker(settings: NatsSettings, *, name: str, stop: asyncio.Event) -> Broker | None:
    """Connect to NATS and ensure the topology, retrying until it works or ``stop`` is set."""
    attempt = 0
    while not stop.is_set():
        try:
            broker = await Broker.connect(settings, name=name, wait_s=_CONNECT_ATTEMPT_S)
        except TransientError as exc:
            attempt += 1
            if attempt == 1 or attempt % 10 == 0:
                log.warning("NATS unavailable (attempt %d): %s", attempt, exc)
            await runtime.sleep_or_stop(stop, _RETRY_S)
            continue
        try:
            (await broker.ensure_topology()).raise_for_conflicts()
        except BaseException:
            await broker.close()
            raise
        return broker
    return None


async def _housekeeping(index: Index, kube: KubeWatch | None, *, stop: asyncio.Event) -> None:
    """Prune ended pods and publish index gauges, every few seconds until stopped."""
    while not await runtime.sleep_or_stop(stop, _HOUSEKEEPING_S):
        pruned = index.prune(now=time.time())
        for kind, n in index.sizes().items():
            m.INDEX_OBJECTS.labels(kind).set(n)
        for watcher in kube.watchers if kube else ():
            m.WATCH_FAILURES.labels(watcher.kind).set(watcher.failures)
            m.WATCH_LISTS.labels(watcher.kind).set(watcher.lists)
        if pruned:
            log.debug("pruned %d ended objects", pruned)


async def _refresh_ranges(labeler: Labeler, options: LabelOptions, *, stop: asyncio.Event) -> None:
    while not await runtime.sleep_or_stop(stop, options.ranges_refresh_s):
        labeler.set_ranges(await _load_ranges(options))
        log.info("cloud ranges refreshed")
