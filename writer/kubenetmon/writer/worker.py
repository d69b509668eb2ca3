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

The splitting and the retries are the insert loop (``insert.insert_all``, shared with ``replay
enriched``); this module says what its outcomes mean for a delivery. Acks, naks and the DLQ all go
through ``consumer.settle``. This module owns no connection: the caller passes a pull source, a broker
and a sink.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from kubenetmon.shared import runtime
from kubenetmon.shared.broker import Broker, PullSource
from kubenetmon.shared.consumer import ACK, Poison, Retry, exhausted, settle
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import DecodeError, TransientError
from kubenetmon.shared.schema import decode_enriched
from kubenetmon.writer import metrics as m
from kubenetmon.writer.batcher import Batch, Batcher, Part
from kubenetmon.writer.insert import insert_all, insert_batch
from kubenetmon.writer.settings import WriterSettings
from kubenetmon.writer.sink import InvalidBatch, Sink, SinkUnavailable

log = logging.getLogger(__name__)

STAGE: Final = "writer"
_IDLE_FETCH_S: Final = 1.0
_MIN_FETCH_S: Final = 0.05


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
            await runtime.sleep_or_stop(stop, self.settings.retry_min_s)
            return
        for delivery in deliveries:
            if (verdict := exhausted(delivery, self.broker.settings.max_deliver)) is not None:
                await settle(self.broker, delivery, verdict, stage=STAGE)
                continue
            await self.admit(delivery)

    async def admit(self, delivery: Delivery) -> None:
        """Decode one delivery into the open batch, or send it to the DLQ if it does not decode."""
        try:
            message = decode_enriched(delivery.data, subject=delivery.subject, share=True)  # read only
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
        return await insert_all(
            batch,
            outcomes=self,
            settings=self.settings,
            stop=stop,
            drain_s=self.drain_s,
            deadline=deadline,
            clock=self.clock,
        )

    # the insert loop's outcomes (``insert.Outcomes``) ---------------------------------------------

    async def insert(self, batch: Batch[Delivery]) -> None:
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

    async def written(self, batch: Batch[Delivery]) -> None:
        await self._ack(batch)

    async def refused(self, part: Part[Delivery], exc: InvalidBatch) -> None:
        m.REJECTED.inc()
        await self._poison(part.owner, exc.reason, exc.detail)
        self._release(part)

    async def unwritten(self, batches: list[Batch[Delivery]], exc: SinkUnavailable) -> None:
        log.error("ClickHouse still unavailable at the drain deadline; handing messages back: %s", exc)
        await self._hand_back(batches)

    def retrying(self, reason: str) -> None:
        m.RETRIES.labels(reason).inc()

    # settling ---------------------------------------------------------------------------------------

    async def _ack(self, batch: Batch[Delivery]) -> None:
        for part in batch.parts:
            await settle(self.broker, part.owner, ACK, stage=STAGE)
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
