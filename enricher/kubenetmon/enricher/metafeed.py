"""Build and follow an enricher's index from the META stream instead of watching the API server.

Why it exists: with ``--metadata-source meta`` the N x W enricher processes of a big cluster never
list or watch; the one active ``metadata`` replica does, and records every change on META. A worker
reads the position of the latest snapshot from the ``metadata`` key-value bucket, reads META from
there (the snapshot: every object, then a ``LISTED`` marker per kind) and keeps following it, so a
restart rebuilds the index from NATS without touching the API server. The index counts as ready once
the snapshot was applied and the reader caught up with the stream.

``MetaFeed.apply`` is pure (a record into the index); ``MetaFeed.follow`` is the thin reading loop
(an ephemeral consumer reopened after the last applied sequence whenever it fails). It must not
publish anything nor decide labeling.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

from kubenetmon.enricher import metrics as m
from kubenetmon.enricher.history import LISTED, Record, decode, object_key
from kubenetmon.enricher.index import KINDS, Index
from kubenetmon.shared import backoff, runtime, topology
from kubenetmon.shared.broker import Broker, Delivery, KeyValue, PullSource
from kubenetmon.shared.errors import DecodeError, TransientError

log = logging.getLogger(__name__)

BUCKET: Final = "metadata"
"""Key-value bucket of the metadata role: its lease and the latest snapshot's position."""
LEASE_KEY: Final = "lease"
SNAPSHOT_KEY: Final = "snapshot"
_BATCH: Final = 500
_FETCH_S: Final = 1.0
_RETRY_MAX_S: Final = 5.0
_INACTIVE_S: Final = 600.0
_SEEN_KEEP_S: Final = 300.0


class MetaFeed:
    """META records into an ``Index``, in stream order."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.applied = 0
        self.undecodable = 0
        self.next_seq = 0
        """The next META sequence to read (0: not started)."""
        self._seen: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
        """kind -> key -> latest observation time of its records (a listing older than that keeps it)."""

    def apply(self, record: Record) -> None:
        """Apply one record at its observation time."""
        self.applied += 1
        seen = self._seen[record.kind]
        if record.event == LISTED:
            self.index.end_missing(record.kind, record.obj.get("keys") or (), now=record.at, since=seen)
            for key in [k for k, at in seen.items() if at < record.at - _SEEN_KEEP_S]:
                del seen[key]
            return
        key = object_key(record.kind, record.obj)
        seen[key] = max(record.at, seen.get(key, record.at))
        self.index.apply(record.kind, record.event, record.obj, now=record.at)

    def apply_delivery(self, delivery: Delivery) -> None:
        try:
            self.apply(decode(delivery.data, subject=delivery.subject))
        except DecodeError as exc:
            self.undecodable += 1
            m.META_UNDECODABLE.inc()
            log.warning("META record %d skipped: %s", delivery.stream_seq, exc)

    async def follow(self, broker: Broker, *, stop: asyncio.Event, caught_up: asyncio.Event) -> None:
        """Wait for a snapshot, read META from it, then follow new records until ``stop``."""
        start = await wait_for_snapshot(broker, stop=stop)
        if start is None:
            return
        self.next_seq = start
        log.info("reading META from the latest snapshot", extra={"seq": start})
        failures = 0
        while not stop.is_set():
            try:
                source = await broker.ephemeral(
                    topology.META, start_seq=self.next_seq, inactive_s=_INACTIVE_S
                )
            except TransientError as exc:
                failures += 1
                await _back_off(exc, failures, stop=stop)
                continue
            try:
                await self._read(source, stop=stop, caught_up=caught_up)
                failures = 0
            except TransientError as exc:
                failures += 1
                await _back_off(exc, failures, stop=stop)
            finally:
                await source.close()

    async def _read(self, source: PullSource, *, stop: asyncio.Event, caught_up: asyncio.Event) -> None:
        while not stop.is_set():
            deliveries = await source.fetch(_BATCH, _FETCH_S)
            if not deliveries:
                if (await source.info()).num_pending == 0 and not caught_up.is_set():
                    self._caught_up(caught_up)
                continue
            for delivery in deliveries:
                if delivery.stream_seq >= self.next_seq:  # else a redelivery of what was applied
                    self.apply_delivery(delivery)
                    self.next_seq = delivery.stream_seq + 1
            await asyncio.gather(*(d.ack() for d in deliveries), return_exceptions=True)
            if deliveries[-1].pending == 0 and not caught_up.is_set():
                self._caught_up(caught_up)

    def _caught_up(self, caught_up: asyncio.Event) -> None:
        log.info("index built from META", extra={"records": self.applied, **self.index.sizes()})
        caught_up.set()


async def wait_for_snapshot(broker: Broker, *, stop: asyncio.Event) -> int | None:
    """The META sequence where the latest snapshot starts, once the metadata role wrote one."""
    waited = 0
    bucket: KeyValue | None = None
    while not stop.is_set():
        try:
            bucket = bucket or await broker.bucket(BUCKET)
            entry = await bucket.get(SNAPSHOT_KEY) if bucket is not None else None
        except TransientError as exc:
            entry = None
            log.debug("snapshot position unavailable: %s", exc)
        if entry is not None:
            try:
                return int(json.loads(entry.value)["seq"])
            except (ValueError, KeyError, TypeError):
                log.warning("snapshot position unreadable: %r", entry.value[:100])
        waited += 1
        if backoff.now_and_then(waited, every=30):
            log.warning("no META snapshot yet: is a `kubenetmon metadata` replica running?")
        await runtime.sleep_or_stop(stop, 1.0)
    return None


async def _back_off(exc: TransientError, failures: int, *, stop: asyncio.Event) -> None:
    if backoff.now_and_then(failures, every=10):
        log.warning("reading META failed (%d in a row): %s; reopening", failures, exc)
    await runtime.sleep_or_stop(stop, backoff.exponential(failures, base_s=0.2, max_s=_RETRY_MAX_S))
