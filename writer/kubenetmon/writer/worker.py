"""One writer process: fetch ENRICHED, batch, insert into ClickHouse, and only then acknowledge.

The order is the whole point (the design notes: conservation, idempotent storage, bad input, drain):

- a message is acknowledged only after the insert that carries its rows returned; a crash before that
  leaves it unacknowledged, and its redelivery replaces the same rows (row identity, not addition);
- while ClickHouse is unavailable the open batch is retried with backoff and kept alive with
  in-progress signals, and nothing more is fetched: memory is one batch, nothing is dropped;
- a batch ClickHouse rejects is split on message boundaries until the one bad message is alone; that
  message goes to the DLQ, its neighbours are written;
- a message that does not decode goes to the DLQ at once; on stop the open batch is flushed, and what
  cannot be written before the drain deadline is handed back (nak) for another worker.

Acks, naks and the DLQ all go through ``consumer.settle``. This module owns no connection: the caller
passes a pull source, a broker and a sink.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

from kubenetmon.shared import backoff
from kubenetmon.shared.broker import Broker, PullSource
from kubenetmon.shared.consumer import ACK, Poison, Retry, settle
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import DecodeError, TransientError
from kubenetmon.shared.schema import COLUMN_NAMES, decode_enriched
from kubenetmon.writer import metrics as m
from kubenetmon.writer.batcher import Batch, Batcher, Part
from kubenetmon.writer.settings import WriterSettings
from kubenetmon.writer.sink import InvalidBatch, Sink, SinkUnavailable
from kubenetmon.writer.tables import INSERT_TYPES, REPORT_COLUMNS, REPORT_INSERT_TYPES, REPORTS_TABLE

log = logging.getLogger(__name__)

STAGE: Final = "writer"
_IDLE_FETCH_S: Final = 1.0
_MIN_FETCH_S: Final = 0.05
_LOG_EVERY_FAILURES: Final = 10


class Writer:
    """The fetch -> batch -> insert -> ack loop of one process. ``run`` returns after a drain."""

    def __init__(
        self,
        *,
        source: PullSource,
        broker: Broker,
        sink: Sink,
        settings: WriterSettings,
        keepalive_s: float,
        drain_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.broker = broker
        self.sink = sink
        self.settings = settings
        self.keepalive_s = keepalive_s
        self.drain_s = drain_s
        self.clock = clock
        self.batcher: Batcher[Delivery] = Batcher(settings.batch_rows, settings.batch_age_s)
        self.held: dict[int, Delivery] = {}
        """Deliveries fetched and not yet settled (kept alive by the keepalive task)."""
        self._rows_per_message = 1.0
        """Running mean, to fetch about as many messages as the open batch still has room for."""

    async def run(self, stop: asyncio.Event) -> None:
        keeper = asyncio.create_task(self._keepalive(), name="writer-keepalive")
        try:
            while not stop.is_set():
                wait = self.batcher.wait(now=self.clock())
                due = self.batcher.take() if wait == 0.0 else None
                if due is not None:
                    await self.write(due, stop=stop)
                    continue
                await self._fetch(stop, wait_s=min(_IDLE_FETCH_S, _IDLE_FETCH_S if wait is None else wait))
            batch = self.batcher.take()
            if batch is not None:
                await self.write(batch, stop=stop, deadline=self.clock() + self.drain_s)
        finally:
            keeper.cancel()

    # fetching ---------------------------------------------------------------------------------------

    def fetch_count(self) -> int:
        """Messages to ask for: what fits in the open batch, so it overshoots by about one message."""
        room = self.settings.batch_rows - self.batcher.pending_rows
        return max(1, min(self.settings.fetch_size, math.ceil(room / self._rows_per_message)))

    async def _fetch(self, stop: asyncio.Event, *, wait_s: float) -> None:
        try:
            deliveries = await self.source.fetch(self.fetch_count(), max(_MIN_FETCH_S, wait_s))
        except TransientError as exc:
            log.warning("fetch from ENRICHED failed; retrying: %s", exc)
            await _pause(stop, self.settings.retry_min_s)
            return
        for delivery in deliveries:
            await self.admit(delivery)

    async def admit(self, delivery: Delivery) -> None:
        """Decode one delivery into the open batch, or send it to the DLQ if it does not decode."""
        try:
            message = decode_enriched(delivery.data, subject=delivery.subject)
        except DecodeError as exc:
            await self._poison(delivery, exc.reason, exc.detail)
            return
        self.batcher.add(message, delivery, now=self.clock(), size=len(delivery.data))
        self.held[id(delivery)] = delivery
        m.ROWS_PENDING.inc(message.row_count)
        self._rows_per_message += (max(1, message.row_count) - self._rows_per_message) / 8

    # writing ----------------------------------------------------------------------------------------

    async def write(
        self, batch: Batch[Delivery], *, stop: asyncio.Event, deadline: float | None = None
    ) -> bool:
        """Insert ``batch`` (splitting rejected parts), ack what was written, DLQ the poison.

        Retries while ClickHouse is unavailable; once ``stop`` is set, only until the drain deadline,
        after which the unwritten messages are handed back. Returns False if that happened.
        """
        work = [batch]
        failures = 0
        while work:
            part = work.pop()
            try:
                await self._insert(part)
            except InvalidBatch as exc:
                if part.messages == 1:
                    await self._poison_part(part.parts[0], exc)
                else:
                    m.RETRIES.labels("split").inc()
                    left, right = part.split()
                    work += [right, left]
                continue
            except SinkUnavailable as exc:
                failures += 1
                m.RETRIES.labels("unavailable").inc()
                work.append(part)
                delay = backoff.exponential(
                    failures - 1,
                    base_s=self.settings.retry_min_s,
                    max_s=self.settings.retry_max_s,
                    max_exponent=30,
                )
                if deadline is None and stop.is_set():
                    deadline = self.clock() + self.drain_s
                if deadline is not None and self.clock() + delay > deadline:
                    log.error(
                        "ClickHouse still unavailable at the drain deadline; handing messages back: %s", exc
                    )
                    await self._hand_back(work)
                    return False
                if backoff.now_and_then(failures, every=_LOG_EVERY_FAILURES):
                    log.warning(
                        "ClickHouse unavailable (attempt %d), retrying in %.1fs: %s", failures, delay, exc
                    )
                await _pause(stop if deadline is None else None, delay)
                continue
            if failures:
                log.info("ClickHouse is back after %d failed attempts", failures)
                failures = 0
            await self._ack(part)
        return True

    async def _insert(self, batch: Batch[Delivery]) -> None:
        ledger = batch.report_columns()
        if batch.rows == 0 and not ledger:
            return
        started = self.clock()
        await asyncio.to_thread(insert_batch, self.sink, batch, ledger)
        if ledger:
            m.REPORTS_WRITTEN.inc(len(ledger[0]))
        took = self.clock() - started
        m.INSERT_SECONDS.observe(took)
        m.BATCH_ROWS.observe(batch.rows)
        m.BATCH_AGE.observe(self.clock() - batch.opened_at)
        m.ROWS_WRITTEN.inc(batch.rows)
        m.MESSAGE_BYTES_WRITTEN.inc(batch.size)
        m.FLOW_BYTES_WRITTEN.inc(batch.flow_bytes())
        log.info(
            "batch written",
            extra={
                "rows": batch.rows,
                "messages": batch.messages,
                "bytes": batch.size,
                "insert_s": round(took, 4),
            },
        )

    # settling ---------------------------------------------------------------------------------------

    async def _ack(self, batch: Batch[Delivery]) -> None:
        for part in batch.parts:
            await settle(self.broker, part.owner, ACK, stage=STAGE)
            self._release(part)

    async def _poison_part(self, part: Part[Delivery], exc: InvalidBatch) -> None:
        m.REJECTED.inc()
        await self._poison(part.owner, exc.reason, exc.detail)
        self._release(part)

    async def _poison(self, delivery: Delivery, reason: str, detail: str) -> None:
        await settle(self.broker, delivery, Poison(reason, detail), stage=STAGE)

    async def _hand_back(self, batches: list[Batch[Delivery]]) -> None:
        for batch in batches:
            for part in batch.parts:
                await settle(
                    self.broker, part.owner, Retry("clickhouse unavailable at shutdown"), stage=STAGE
                )
                self._release(part)

    def _release(self, part: Part[Delivery]) -> None:
        if self.held.pop(id(part.owner), None) is not None:
            m.ROWS_PENDING.dec(part.rows)

    async def _keepalive(self) -> None:
        """Tell the server that held messages are still being worked on, so none is redelivered."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            for delivery in list(self.held.values()):
                try:
                    await delivery.in_progress()
                except TransientError as exc:
                    log.debug("in-progress signal failed: %s", exc)


def insert_batch(sink: Sink, batch: Batch[Any], ledger: list[list[Any]]) -> None:
    """The flows, then the ledger rows of the same messages (both idempotent: a retry of both is safe)."""
    if batch.rows:
        sink.insert(sink.table, batch.columns, names=COLUMN_NAMES, types=INSERT_TYPES)
    if ledger:
        sink.insert(REPORTS_TABLE, ledger, names=REPORT_COLUMNS, types=REPORT_INSERT_TYPES)


async def _pause(stop: asyncio.Event | None, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` gets set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
