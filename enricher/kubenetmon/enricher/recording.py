"""Publish the metadata history an enricher observes to the META stream, in order, never blocking it.

Why it exists: the enricher's index follows the cluster for labeling now; ``replay raw --metadata
as-of`` needs the same facts later. ``MetaPublisher.observe`` is called on the event loop with every
update the index receives (lists, watch events, a static inventory) and queues the records the
``history.Recorder`` makes of them; ``run`` publishes the queue and, at every multiple of the snapshot
period (UTC, the same instant in every process, so the duplicate window keeps one copy), queues a full
snapshot, so the history outlives the stream's retention for objects that never change.

While NATS is unavailable the queue waits (bounded: the oldest records go first when it is full, and
the next snapshot restores the state). It must not touch the index or decide anything about labeling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from kubenetmon.enricher.history import Record, Recorder, encode
from kubenetmon.enricher.objects import Obj
from kubenetmon.shared import backoff, runtime
from kubenetmon.shared.broker import Broker, PublishResult
from kubenetmon.shared.errors import PoisonError, TransientError

log = logging.getLogger(__name__)

_CHUNK: Final = 64
"""Records published concurrently (their order is kept: one connection sends them in turn)."""
_RETRY_MAX_S: Final = 10.0


class MetaPublisher:
    """Queues records from index updates; ``run`` publishes them to META."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        snapshot_s: float,
        max_pending: int = 200_000,
        clock: Callable[[], float] = time.time,
        on_stored: Callable[[Record, PublishResult], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.on_stored = on_stored
        """Called with each record the stream stored (or dropped as a duplicate), in order."""
        self.snapshot_s = snapshot_s
        self.max_pending = max_pending
        self.clock = clock
        self.published = 0
        self.dropped = 0
        self._queue: deque[Record] = deque()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def observe(self, kind: str, event: str, objects: Iterable[Obj], *, at: float) -> None:
        """Record one update (call it where the index is fed: on the event loop)."""
        self._enqueue(self.recorder.observe(kind, event, objects, at=at))

    def queue_snapshot(self, *, at: float, tag: int | str) -> tuple[str, str]:
        """Queue every known object again now; returns the ids of the snapshot's first and last records."""
        records = self.recorder.snapshot(at=at, period=tag)
        self._enqueue(records)
        return records[0].msg_id, records[-1].msg_id

    def _enqueue(self, records: list[Record]) -> None:
        self._queue.extend(records)
        overflow = len(self._queue) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            if self.dropped == 0 or (self.dropped + overflow) // 10_000 > self.dropped // 10_000:
                log.warning("metadata history queue full: dropped %d oldest records", self.dropped + overflow)
            self.dropped += overflow
        if records:
            self._wake.set()

    async def run(self, broker: Broker, *, stop: asyncio.Event) -> None:
        """Publish until ``stop``; queue a snapshot at every period boundary."""
        next_snapshot = self._next_boundary(self.clock())
        failures = 0
        while not stop.is_set():
            now = self.clock()
            if next_snapshot is not None and now >= next_snapshot:
                period = int(next_snapshot // self.snapshot_s)
                self._enqueue(self.recorder.snapshot(at=now, period=period))
                log.info("metadata snapshot queued", extra={"period": period, "pending": self.pending})
                next_snapshot = self._next_boundary(now)
            if not self._queue:
                self._wake.clear()
                wait = None if next_snapshot is None else max(0.0, next_snapshot - now)
                await runtime.wait_any(self._wake, stop, within=wait)
                continue
            chunk = [self._queue[i] for i in range(min(_CHUNK, len(self._queue)))]
            if await self._publish(broker, chunk):
                for _ in chunk:
                    self._queue.popleft()
                failures = 0
                continue
            failures += 1
            if backoff.now_and_then(failures, every=10):
                log.warning("metadata history publish failed (%d in a row); retrying", failures)
            await runtime.sleep_or_stop(stop, backoff.exponential(failures, base_s=0.2, max_s=_RETRY_MAX_S))

    async def _publish(self, broker: Broker, chunk: list[Record]) -> bool:
        """True once every record of ``chunk`` is stored (or refused for good); False to retry all."""
        results = await asyncio.gather(
            *(broker.publish(broker.meta_subject(r.kind), encode(r), msg_id=r.msg_id) for r in chunk),
            return_exceptions=True,
        )
        retry = False
        for record, result in zip(chunk, results, strict=True):
            if isinstance(result, PoisonError):
                log.error("metadata record %s refused: %s", record.msg_id, result)
            elif isinstance(result, TransientError):
                retry = True
            elif isinstance(result, BaseException):
                raise result
            elif self.on_stored is not None:
                self.on_stored(record, result)
        if retry:
            return False
        self.published += len(chunk)
        return True

    def _next_boundary(self, now: float) -> float | None:
        if self.snapshot_s <= 0:
            return None
        return (math.floor(now / self.snapshot_s) + 1) * self.snapshot_s
