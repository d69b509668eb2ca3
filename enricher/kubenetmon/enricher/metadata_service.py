"""The ``kubenetmon metadata`` process: one watcher of the API server for any number of enrichers.

Why it exists: every enricher process listing and watching every Pod, Node and Service costs the API
server one watch per kind per process, and a full relist of everything at each rollout. This role
runs as a Deployment of 2 replicas; the one holding the lease (a compare-and-set key in the NATS
key-value bucket ``<prefix>_metadata``, see ``broker.kv``) lists and watches, records every change
on META exactly as watching enrichers do (``history.Recorder``), and publishes a full snapshot at
each takeover and every ``--metadata-snapshot``. Once a snapshot is stored in full, its first
sequence goes to the bucket's ``snapshot`` key: enrichers with ``--metadata-source meta`` start
reading META there (``metafeed``). The standby polls the lease and takes over once it went
unrenewed for ``--lease-ttl``; the new holder relists, so a change made while nobody watched is
recorded (and a pod deleted meanwhile is closed by the ``LISTED`` marker).

It must not label anything or consume RAW; the watch code is ``watch``'s, the records ``history``'s.
The command (flags, the supervisor) is ``metadata``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Final

from kubenetmon.enricher import metrics as m
from kubenetmon.enricher.history import Record, Recorder
from kubenetmon.enricher.index import KINDS
from kubenetmon.enricher.metafeed import BUCKET, LEASE_KEY, SNAPSHOT_KEY
from kubenetmon.enricher.recording import MetaPublisher
from kubenetmon.enricher.settings import MetadataOptions
from kubenetmon.enricher.watch import LISTED, KubeWatch, Update
from kubenetmon.shared import backoff, runtime
from kubenetmon.shared.broker import Broker, KeyValue, Lease, PublishResult, connect_ready_or_stop
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.pool import Ready, run_worker
from kubenetmon.shared.settings import (
    HttpSettings,
    NatsSettings,
    RuntimeSettings,
)

log = logging.getLogger(__name__)

_CONNECT_ATTEMPT_S: Final = 5.0
_RETRY_S: Final = 1.0


@dataclass(frozen=True)
class MetadataConfig:
    """Everything the metadata process needs (picklable: it crosses the spawn)."""

    nats: NatsSettings
    metadata: MetadataOptions
    runtime: RuntimeSettings
    http: HttpSettings


def work(config: MetadataConfig, ready: Ready) -> int:
    """The one worker process (the pool's target)."""
    return run_worker(serve, config, ready)


async def serve(config: MetadataConfig, *, ready: Ready, stop: asyncio.Event) -> int:
    """Hold the lease or stand by until ``stop``; while holding it, watch and record (``Term``)."""
    broker = await connect_ready_or_stop(
        config.nats, name=ready.name, stop=stop, wait_s=_CONNECT_ATTEMPT_S, retry_s=_RETRY_S, log=log
    )
    if broker is None:
        return 0
    lease: Lease | None = None
    try:
        bucket = await _open_bucket(broker, stop=stop)
        if bucket is None:
            return 0
        holder = config.metadata.holder or f"{socket.gethostname()}/{os.getpid()}"
        lease = Lease(bucket, key=LEASE_KEY, holder=holder, ttl_s=config.metadata.lease_ttl_s)
        ready()
        log.info("standing by for the lease", extra={"holder": holder})
        while not stop.is_set():
            if await _attempt(lease):
                m.METADATA_TERMS.inc()
                log.info("lease acquired: listing and watching", extra={"holder": holder, "term": lease.term})
                code = await Term(config, broker=broker, bucket=bucket, lease=lease).run(stop=stop)
                if code:
                    return code
                continue
            await runtime.sleep_or_stop(stop, lease.poll_s)
        return 0
    finally:
        m.METADATA_LEADER.set(0)
        if lease is not None:
            await lease.release()
        ready(False)
        await broker.drain()


async def _open_bucket(broker: Broker, *, stop: asyncio.Event) -> KeyValue | None:
    while not stop.is_set():
        try:
            return await broker.bucket(BUCKET, create=True)
        except TransientError as exc:
            log.warning("key-value bucket unavailable: %s", exc)
            await runtime.sleep_or_stop(stop, _RETRY_S)
    return None


async def _attempt(lease: Lease) -> bool:
    try:
        return await lease.attempt()
    except TransientError as exc:
        log.warning("lease check failed: %s", exc)
        return lease.held


class Term:
    """One period as the lease holder: watch, record, snapshot, renew; ends when the lease is lost."""

    def __init__(self, config: MetadataConfig, *, broker: Broker, bucket: KeyValue, lease: Lease) -> None:
        self.config = config
        self.broker = broker
        self.bucket = bucket
        self.lease = lease
        self.publisher = MetaPublisher(Recorder(), snapshot_s=0, on_stored=self._stored)
        self.listed: set[str] = set()
        self.all_listed = asyncio.Event()
        self.snapshots = 0
        self._snapshot: tuple[str, str] = ("", "")
        self._snapshot_seq = 0
        self._snapshot_stored = asyncio.Event()

    async def run(self, *, stop: asyncio.Event) -> int:
        ended = asyncio.Event()
        stop_watch = asyncio.create_task(stop.wait())
        stop_watch.add_done_callback(lambda _: ended.set())
        loop = asyncio.get_running_loop()

        def deliver(update: Update) -> None:  # in watcher threads: hand over to the loop
            loop.call_soon_threadsafe(self._observe, update)

        kube = await asyncio.to_thread(KubeWatch, self.config.metadata.watch(), deliver)
        kube.start()
        m.METADATA_LEADER.set(1)
        try:
            async with runtime.RootTasks(ended) as tasks:
                tasks.start("publish", self.publisher.run(self.broker, stop=ended))
                tasks.start("drops", self._count_drops(ended))
                tasks.start("lease", self._keep_lease(ended))
                tasks.start("snapshots", self._snapshots(ended))
            return tasks.exit_code
        finally:
            stop_watch.cancel()
            m.METADATA_LEADER.set(0)
            await asyncio.to_thread(kube.close)
            log.info("term ended", extra={"term": self.lease.term, "published": self.publisher.published})

    def _observe(self, update: Update) -> None:
        self.publisher.observe(update.kind, update.event, update.objects, at=update.at)
        if update.event == LISTED:
            self.listed.add(update.kind)
            if self.listed >= set(KINDS):
                self.all_listed.set()

    def _stored(self, record: Record, result: PublishResult) -> None:
        m.METADATA_PUBLISHED.inc()
        first, last = self._snapshot
        if record.msg_id == first:
            self._snapshot_seq = result.seq
        if record.msg_id == last:
            self._snapshot_stored.set()

    async def _count_drops(self, ended: asyncio.Event) -> None:
        """Export the publisher's queue overflows (it only counts them) until the term ends."""
        dropped = 0
        while True:
            stopping = await runtime.sleep_or_stop(ended, 1.0)
            if self.publisher.dropped > dropped:
                m.METADATA_DROPPED.inc(self.publisher.dropped - dropped)
                dropped = self.publisher.dropped
            if stopping:
                return

    async def _keep_lease(self, ended: asyncio.Event) -> None:
        while not await runtime.sleep_or_stop(ended, self.lease.poll_s):
            if not await _attempt(self.lease):
                log.warning("lease no longer held: stopping the watch")
                ended.set()

    async def _snapshots(self, ended: asyncio.Event) -> None:
        """A snapshot once every kind was listed, then every period; point the bucket at each."""
        if not await _wait(self.all_listed, ended):
            return
        while not ended.is_set():
            self.snapshots += 1
            self._snapshot_stored.clear()
            # Unique per snapshot (a renewed term keeps its number): a duplicate id would be dropped
            # by the stream and the pointer would go to an older copy.
            tag = f"{self.lease.term}-{time.time_ns()}"
            self._snapshot = self.publisher.queue_snapshot(at=time.time(), tag=tag)
            log.info("snapshot queued", extra={"tag": tag, "pending": self.publisher.pending})
            if not await _wait(self._snapshot_stored, ended):
                return
            await self._point(tag, ended)
            if await runtime.sleep_or_stop(ended, self.config.metadata.snapshot_s):
                return

    async def _point(self, tag: str, ended: asyncio.Event) -> None:
        """Write the stored snapshot's first sequence to the bucket (retried until the term ends)."""
        value = json.dumps(
            {"seq": self._snapshot_seq, "at": time.time(), "tag": tag, "holder": self.lease.holder}
        ).encode()
        failures = 0
        while not ended.is_set():
            try:
                await self.bucket.put(SNAPSHOT_KEY, value)
                log.info("snapshot stored", extra={"seq": self._snapshot_seq, "tag": tag})
                return
            except TransientError as exc:
                failures += 1
                if backoff.now_and_then(failures, every=10):
                    log.warning("snapshot position not written (%d in a row): %s", failures, exc)
                await runtime.sleep_or_stop(ended, _RETRY_S)


async def _wait(event: asyncio.Event, ended: asyncio.Event) -> bool:
    """Wait for ``event``; False if ``ended`` came first."""
    await runtime.wait_any(event, ended)
    return event.is_set() and not ended.is_set()
