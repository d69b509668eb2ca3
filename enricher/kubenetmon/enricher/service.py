"""One enricher worker process: fill the index, connect, consume RAW until SIGTERM, drain.

Each worker process (the pool's target, ``work``): load the cloud ranges (missing sources degrade,
never block), fill its index (see ``fill``: a static ``--inventory``, list+watch threads, or with
``--metadata-source meta`` the META stream from its latest snapshot), connect to NATS and ensure the
topology, report ready once the index is listed (or built from META), then consume RAW until SIGTERM
and drain. Side tasks refresh the ranges, prune the index and publish gauges. The handling of each
message is ``worker``'s; parsing the flags is ``cli``'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Final

from kubenetmon.enricher import metrics as m
from kubenetmon.enricher import sources
from kubenetmon.enricher.fill import IndexFill
from kubenetmon.enricher.history import Recorder
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.enricher.recording import MetaPublisher
from kubenetmon.enricher.settings import EnricherOptions, HistoryOptions, LabelOptions, SourceOptions
from kubenetmon.enricher.worker import STAGE, Enricher
from kubenetmon.shared import runtime
from kubenetmon.shared.broker import Broker, connect_ready_or_stop
from kubenetmon.shared.consumer import STORE_FULL, consume
from kubenetmon.shared.pool import Ready, run_worker
from kubenetmon.shared.settings import HttpSettings, NatsSettings, RuntimeSettings

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


def work(config: EnricherConfig, ready: Ready) -> int:
    """A worker process (the pool's target)."""
    return run_worker(serve, config, ready)


async def serve(config: EnricherConfig, *, ready: Ready, stop: asyncio.Event) -> int:
    index = Index(grace_seconds=config.label.pod_grace_s)
    labeler = Labeler(config.label.label(), index=index, ranges=await _load_ranges(config.label))
    from_meta = config.source.metadata_source == "meta"
    history = (
        MetaPublisher(Recorder(), snapshot_s=config.history.snapshot_s)
        if config.history.enabled and not from_meta  # reading META, there is nothing new to record
        else None
    )
    fill = IndexFill(index, inventory=config.label.inventory, watch=config.enricher.watch(), observer=history)
    if not from_meta:
        await fill.start()
    broker: Broker | None = None
    try:
        broker = await connect_broker(config.nats, name=ready.name, stop=stop)
        if broker is None:
            return 0
        broker.capacity.listen(lambda full: ready.hold(STORE_FULL, full))
        async with runtime.RootTasks(stop) as tasks:
            if from_meta:
                tasks.start("metadata-feed", fill.follow_meta(broker, stop=stop))
            if await _wait_ready(fill.listed, stop):
                enricher = Enricher(
                    labeler, broker=broker, max_rows=config.enricher.max_rows, bounds=config.enricher.bounds()
                )
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
                tasks.start("housekeeping", _housekeeping(index, fill, stop=stop))
                if history is not None:
                    tasks.start("metadata-history", history.run(broker, stop=stop))
                if config.label.ranges_refresh_s > 0 and any(sources.is_url(s) for s in config.label.ranges):
                    tasks.start("ranges", _refresh_ranges(labeler, config.label, stop=stop))
        ready(False)
        return tasks.exit_code
    finally:
        await fill.close()
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


async def _wait_ready(listed: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until every kind was listed; False if stopped first."""
    await runtime.wait_any(listed, stop, within=30.0)
    if not (listed.is_set() or stop.is_set()):
        log.warning("still waiting for the first list of every kind")
        await runtime.wait_any(listed, stop)
    if not listed.is_set():
        return False
    m.INDEX_READY.set(1)
    return True


async def connect_broker(settings: NatsSettings, *, name: str, stop: asyncio.Event) -> Broker | None:
    """Connect to NATS and ensure the topology, retrying until it works or ``stop`` is set."""
    return await connect_ready_or_stop(
        settings, name=name, stop=stop, wait_s=_CONNECT_ATTEMPT_S, retry_s=_RETRY_S, log=log
    )


async def _housekeeping(index: Index, fill: IndexFill, *, stop: asyncio.Event) -> None:
    """Prune ended pods and publish index gauges, every few seconds until stopped."""
    while not await runtime.sleep_or_stop(stop, _HOUSEKEEPING_S):
        pruned = index.prune(now=time.time())
        for kind, n in index.sizes().items():
            m.INDEX_OBJECTS.labels(kind).set(n)
        for watcher in fill.watchers:
            m.WATCH_FAILURES.labels(watcher.kind).set(watcher.failures)
            m.WATCH_LISTS.labels(watcher.kind).set(watcher.lists)
        if pruned:
            log.debug("pruned %d ended objects", pruned)


async def _refresh_ranges(labeler: Labeler, options: LabelOptions, *, stop: asyncio.Event) -> None:
    while not await runtime.sleep_or_stop(stop, options.ranges_refresh_s):
        labeler.set_ranges(await _load_ranges(options))
        log.info("cloud ranges refreshed")
