"""The agent's publish backlog: reports persisted and not yet acknowledged, published oldest first.

Why it exists: a cut report must survive a crash and an outage, and be sent exactly as it was cut. A
report is written to disk when it is added; it may be published only once the saved state lists it
(``saved`` marks those ``durable``), and it is forgotten only after the broker acknowledged every chunk
and the state without it was saved (its file is then deleted). With the broker down the backlog is
bounded by merging the two newest reports past ``max_reports`` (``--max-backlog-reports``); chunks the
server refuses as too large are re-cut into smaller reports under new seqs. ``run`` publishes until
``stop``, then drains what is pending within ``drain_s``; the rest stays on disk for the next start.

It must not touch conntrack or the delta table: saving the state (``checkpoint``) and numbering reports
(``seq``) are the agent's, called back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from kubenetmon.agent import metrics, reports
from kubenetmon.agent.checkpoint import StateDir
from kubenetmon.agent.publisher import Oversized, Publisher
from kubenetmon.agent.reports import Report
from kubenetmon.shared import backoff
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.runtime import sleep_or_stop, wait_any

log = logging.getLogger(__name__)

RETRY_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Delays between attempts to send the oldest report, seconds (the last one repeats)."""


class Backlog:
    """Pending reports, oldest first; ``run(stop)`` publishes them."""

    def __init__(
        self,
        *,
        store: StateDir,
        publisher: Publisher,
        max_reports: int,
        max_message_bytes: int,
        seq: Callable[[], int],
        checkpoint: Callable[[], None],
        drain_s: float = 20.0,
    ) -> None:
        self.store, self.publisher = store, publisher
        self.max_reports, self.max_message_bytes = max_reports, max_message_bytes
        self.seq, self.checkpoint, self.drain_s = seq, checkpoint, drain_s
        self.pending: list[Report] = []
        self.durable: set[int] = set()
        """Seqs of the reports the saved state lists: only those may be published."""
        self.offered: set[int] = set()
        """Seqs of the pending reports that may have reached the broker: offered by this process, or
        adopted from disk (an earlier process may have sent them). A duplicate ack for any other is
        not a retry: someone else used the id (``Publisher.send``'s ``fresh``)."""
        self._obsolete: list[int] = []
        self._failure = ""
        self._work = asyncio.Event()
        self._final = False

    def adopt(self, seqs: Iterable[int]) -> None:
        """Take over the stored reports a saved state (or the directory) lists; an unreadable one is lost."""
        self.pending = [r for r in map(self._load, seqs) if r is not None]
        self.offered = {r.seq for r in self.pending}

    def _load(self, seq: int) -> Report | None:
        try:
            return self.store.load_report(seq)
        except (OSError, ValueError) as exc:
            log.error("pending report %d cannot be read (%s): its rows are lost", seq, exc)
            return None

    def add(self, report: Report) -> None:
        """Persist a new report and queue it; past ``max_reports``, merge the newest two."""
        self.store.save_report(report)
        self.pending.append(report)
        if len(self.pending) > self.max_reports:
            self._merge_newest()
        metrics.BACKLOG.set(len(self.pending))
        self._work.set()

    def _merge_newest(self) -> None:
        """Bound the backlog: merge the two newest reports (never pending[0], which may be in flight;
        cap >= 2, so len >= 3 here). A record spans at most ``MAX_INTERVAL_SECONDS`` (every consumer
        rejects more), so once the newest covers that long the backlog grows by one report instead:
        one per 18 hours of outage."""
        older, newer = self.pending[-2], self.pending[-1]
        if not reports.mergeable(older, newer):
            return
        merged = reports.merge(older, newer, seq=self.seq(), max_bytes=self.max_message_bytes)
        self.store.save_report(merged)
        self.pending[-2:] = [merged]
        self._obsolete += [older.seq, newer.seq]
        metrics.BACKLOG_MERGES.inc()

    def saved(self) -> None:
        """The state listing ``pending`` is saved: those may be published, and forgotten ones deleted."""
        self.durable = {r.seq for r in self.pending}
        for seq in self._obsolete:
            self.store.delete_report(seq)
        self._obsolete.clear()
        self._work.set()

    def finish(self) -> None:
        """No report will be added any more: ``run`` ends once the backlog is empty."""
        self._final = True
        self._work.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until stopped; then drain what is pending within ``drain_s``, the rest stays on disk."""
        worker = asyncio.ensure_future(self.publish(stop))
        try:
            await _first_done(worker, stop)
            if not worker.done():
                await asyncio.wait({worker}, timeout=self.drain_s)
        finally:
            if not worker.done():
                worker.cancel()  # safe: a publish repeated later carries the same message ids
                await asyncio.gather(worker, return_exceptions=True)
                log.warning(
                    "drain budget spent: %d reports stay on disk for the next start", len(self.pending)
                )
        if not worker.cancelled():
            worker.result()

    async def publish(self, stop: asyncio.Event) -> None:
        """Send the oldest durable report, again and again; after ``stop``, until ``finish`` and empty."""
        failures = 0
        while True:
            if not self.pending or self.pending[0].seq not in self.durable:
                if self._final and not self.pending:
                    return
                self._work.clear()
                await (self._work.wait() if stop.is_set() else wait_any(self._work, stop))
                continue
            if await self.send_head():
                if failures:
                    log.info("publishing again", extra={"failures": failures, "backlog": len(self.pending)})
                failures = 0
                continue
            failures += 1
            metrics.PUBLISH_RETRIES.inc()
            if backoff.now_and_then(failures, every=20):  # not one line per retry during an outage
                log.warning(
                    "cannot publish yet, will retry",
                    extra={"failures": failures, "backlog": len(self.pending), "error": self._failure},
                )
            delay = backoff.from_table(RETRY_S, failures)
            await (asyncio.sleep(delay) if stop.is_set() else sleep_or_stop(stop, delay))

    async def send_head(self) -> bool:
        """Send the oldest report; True if it is done with (acknowledged, or split), False to retry."""
        head = self.pending[0]
        fresh = head.seq not in self.offered
        self.offered.add(head.seq)
        try:
            sent = await self.publisher.send(head, fresh=fresh)
        except TransientError as exc:
            self._failure = str(exc)
            return False
        except Oversized as exc:
            self._split(head, exc.chunks)
            return True
        self.pending.pop(0)
        self.offered.discard(head.seq)
        self._obsolete.append(head.seq)
        self.checkpoint()
        metrics.MESSAGES.inc(sent.messages)
        metrics.DUPLICATES.inc(sent.duplicates)
        metrics.PUBLISHED_BYTES.inc(sent.bytes)
        metrics.RECORDS.inc(head.rows)
        metrics.BACKLOG.set(len(self.pending))
        return True

    def _split(self, head: Report, chunks: list[int]) -> None:
        """Re-cut the rows of refused chunks into smaller messages (new seqs); the rest was acknowledged."""
        log.error("report %d: chunks %s exceed the server's max payload; splitting them", head.seq, chunks)
        parts = [
            reports.split(head, i, seq=self.seq(), max_bytes=max(len(head.chunks[i]) // 2, 4096))
            for i in chunks
        ]
        for part in parts:
            self.store.save_report(part)
        self.pending[0:1] = parts
        self.offered.discard(head.seq)
        self._obsolete.append(head.seq)
        self.checkpoint()


async def _first_done(task: asyncio.Future[None], event: asyncio.Event) -> None:
    """Wait until ``task`` is done or ``event`` is set."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
