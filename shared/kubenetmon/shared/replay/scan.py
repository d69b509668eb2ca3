"""Read a bounded range of one stream, in order and once, for a replay.

Why it exists: each replay verb reads history the same way. ``scan`` notes the stream's last sequence
when it starts, opens an ephemeral consumer from a stream time (or from the beginning), and yields the
messages in batches until it has seen that last sequence (or a message stored after ``until``), so a
replay ends even while live traffic keeps arriving. A message the server delivers again (after the ack
wait, while the caller was busy) is acknowledged and not yielded a second time.

The consumer is the replay's own and lives in memory: acknowledging only lets the server send more
(``max_ack_pending``), it records nothing. Each batch is acknowledged once the caller asks for the
next one, i.e. after it handled the batch. Live durable consumers are untouched.

It must not interpret payloads: the verbs decode and select.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff
from kubenetmon.shared.broker import Broker, Delivery, PullSource
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.runtime import sleep_or_stop

log = logging.getLogger(__name__)

_INACTIVE_S: Final = 3600.0
"""The server drops the replay's consumer after this long without a fetch (e.g. a stalled Ctrl-Z)."""
_REOPEN_AFTER: Final = 3
"""Failed fetches in a row after which the consumer is recreated from the last sequence read."""


@dataclass(frozen=True)
class Range:
    """What to read: a stream kind, from a stream time (None: its first message), optionally one subject."""

    kind: str
    start_time: float | None = None
    filter_subject: str | None = None
    until: float | None = None
    """Stop at the first message stored after this Unix time (None: read up to the last sequence)."""


async def scan(
    broker: Broker,
    rng: Range,
    *,
    stop: asyncio.Event,
    batch: int = 100,
    fetch_timeout: float = 1.0,
    on_total: Callable[[int], None] | None = None,
) -> AsyncGenerator[list[Delivery], None]:
    """Batches of the range's messages, in stream order; ends at the last sequence seen at start.

    ``on_total`` receives the number of messages the consumer has to deliver (an upper bound of
    what will be yielded), once, before the first batch.
    """
    info = await broker.stream_info(rng.kind)
    if info.messages == 0:
        if on_total is not None:
            on_total(0)
        return
    reader = _Reader(broker, rng, last_seq=info.last_seq)
    try:
        pending = await reader.open()
        if on_total is not None:
            on_total(pending)
        reader.done = pending == 0
        while not stop.is_set() and not reader.done:
            deliveries = await reader.next(batch, fetch_timeout, stop=stop)
            if deliveries:
                yield deliveries
                await _ack(deliveries)
    finally:
        await reader.close()


class _Reader:
    """Fetches, drops redeliveries, decides when the range is exhausted, and survives a lost consumer."""

    def __init__(self, broker: Broker, rng: Range, *, last_seq: int) -> None:
        self.broker = broker
        self.rng = rng
        self.last_seq = last_seq
        self.seen = 0
        """Highest stream sequence handed out so far."""
        self.done = False
        self.failures = 0
        self.source: PullSource | None = None

    async def open(self) -> int:
        """Create the consumer (after ``seen`` if something was read already); its pending count."""
        start_seq = self.seen + 1 if self.seen else None
        self.source = await self.broker.ephemeral(
            self.rng.kind,
            start_time=None if start_seq else self.rng.start_time,
            start_seq=start_seq,
            filter_subject=self.rng.filter_subject,
            inactive_s=_INACTIVE_S,
        )
        return (await self.source.info()).num_pending

    async def close(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            await source.close()

    async def next(self, batch: int, wait_s: float, *, stop: asyncio.Event) -> list[Delivery]:
        try:
            if self.source is None:
                await self.open()
            assert self.source is not None
            deliveries = await self.source.fetch(batch, wait_s)
        except TransientError as exc:
            self.failures += 1
            if backoff.now_and_then(self.failures, every=10):
                log.warning("replay fetch failed (%d in a row): %s", self.failures, exc)
            if self.failures % _REOPEN_AFTER == 0:  # the server may have dropped an idle consumer
                await self.close()
            await sleep_or_stop(stop, backoff.exponential(self.failures, base_s=0.2, max_s=5.0))
            return []
        self.failures = 0
        if not deliveries:
            await self._check_exhausted()
            return []
        fresh: list[Delivery] = []
        extra: list[Delivery] = []
        for delivery in deliveries:
            if self.done or delivery.stream_seq <= self.seen:
                extra.append(delivery)  # a redelivery, or past the end
            elif self.rng.until is not None and delivery.timestamp > self.rng.until:
                self.done = True
                extra.append(delivery)
            else:
                fresh.append(delivery)
                self.seen = delivery.stream_seq
                if delivery.stream_seq >= self.last_seq or delivery.pending == 0:
                    self.done = True
        await _ack(extra)
        return fresh

    async def _check_exhausted(self) -> None:
        try:
            stats = await self.source.info() if self.source is not None else None
        except TransientError as exc:
            log.debug("consumer info failed: %s", exc)
            return
        if stats is not None and stats.num_pending == 0:  # all delivered; redeliveries would be skipped
            self.done = True


async def _ack(deliveries: list[Delivery]) -> None:
    for delivery in deliveries:
        try:
            await delivery.ack()
        except TransientError as exc:  # only flow control: the server redelivers, the reader skips it
            log.debug("replay ack failed: %s", exc)
