"""The one insert loop of the writer and ``replay enriched``: bisect what ClickHouse refuses, retry while
it is unavailable, and tell the caller what became of every part.

- A batch ClickHouse refuses (``InvalidBatch``) is split on a message boundary, left half first, until
  the refused message is alone; its neighbours are written.
- While ClickHouse is unavailable (``SinkUnavailable``) the part is tried again with backoff, doubling
  from ``retry_min_s`` up to ``retry_max_s``; the first failure and every tenth are logged. Before
  ``stop`` is set it waits for as long as that takes; once it is set, only until a deadline (``drain_s``
  after the first failure that sees ``stop``, or the deadline the caller passed), then it gives up the
  parts not written.

What a written part, a refused message and a given-up part mean is the caller's (``Outcomes``): the
writer acknowledges, dead-letters and hands back; the replay counts. ``insert_batch`` is what one insert
is for both: the flows, then the ledger rows of the same messages. This module never settles a message
and owns no connection; it knows nothing of NATS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from kubenetmon.shared import backoff, runtime
from kubenetmon.shared.schema import COLUMN_NAMES
from kubenetmon.writer.batcher import Batch, Part
from kubenetmon.writer.flow_tables import (
    INSERT_TYPES,
    NODE_COLUMN_NAMES,
    NODE_INSERT_TYPES,
    REPORT_COLUMNS,
    REPORT_INSERT_TYPES,
    REPORTS_TABLE,
    node_table,
)
from kubenetmon.writer.settings import WriterSettings
from kubenetmon.writer.sink import InvalidBatch, Sink, SinkUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_EVERY_FAILURES: Final = 10


class Outcomes(Protocol[T]):
    """The caller's side of the loop: how a part is inserted, and what each outcome means to it."""

    async def insert(self, batch: Batch[T]) -> None:
        """Insert ``batch``; raise ``InvalidBatch`` or ``SinkUnavailable`` as the sink does."""

    async def written(self, batch: Batch[T]) -> None:
        """``batch`` is in ClickHouse."""

    async def refused(self, part: Part[T], exc: InvalidBatch) -> None:
        """ClickHouse refused this one message (its neighbours were or will be written)."""

    async def unwritten(self, batches: list[Batch[T]], exc: SinkUnavailable) -> None:
        """Stopping, and ClickHouse still unavailable at the deadline: these parts were not written."""

    def retrying(self, reason: str) -> None:
        """A part is tried again: ``split`` (refused, halved) or ``unavailable`` (after a pause)."""


def insert_batch(sink: Sink, batch: Batch[Any], ledger: list[list[Any]]) -> None:
    """The pod rows into the flows table, the node rows into the node table, then the ledger rows of the
    same messages: one column-oriented insert per table that has rows (all idempotent: a retry of all of
    them is safe)."""
    if batch.columns[0]:
        sink.insert(sink.table, batch.columns, names=COLUMN_NAMES, types=INSERT_TYPES)
    if batch.nodes[0]:
        sink.insert(node_table(sink.table), batch.nodes, names=NODE_COLUMN_NAMES, types=NODE_INSERT_TYPES)
    if ledger:
        sink.insert(REPORTS_TABLE, ledger, names=REPORT_COLUMNS, types=REPORT_INSERT_TYPES)


def retry_delay(settings: WriterSettings, *, failures: int) -> float:
    """The pause after ``failures`` failed attempts in a row: doubling from the minimum, capped."""
    return backoff.exponential(
        failures - 1, base_s=settings.retry_min_s, max_s=settings.retry_max_s, max_exponent=30
    )


async def insert_all(
    batch: Batch[T],
    *,
    outcomes: Outcomes[T],
    settings: WriterSettings,
    stop: asyncio.Event,
    drain_s: float,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Insert ``batch`` part by part until every message is written or refused; False if parts were
    given up (``outcomes.unwritten``) at the deadline."""
    work = [batch]
    failures = 0
    while work:
        part = work.pop()
        try:
            await outcomes.insert(part)
        except InvalidBatch as exc:
            if part.messages == 1:
                await outcomes.refused(part.parts[0], exc)
            else:
                outcomes.retrying("split")
                left, right = part.split()
                work += [right, left]
            continue
        except SinkUnavailable as exc:
            failures += 1
            outcomes.retrying("unavailable")
            work.append(part)
            delay = retry_delay(settings, failures=failures)
            if deadline is None and stop.is_set():
                deadline = clock() + drain_s
            if deadline is not None and clock() + delay > deadline:
                await outcomes.unwritten(work, exc)
                return False
            if backoff.now_and_then(failures, every=_LOG_EVERY_FAILURES):
                log.warning(
                    "ClickHouse unavailable (attempt %d), retrying in %.1fs: %s", failures, delay, exc
                )
            if deadline is None:
                await runtime.sleep_or_stop(stop, delay)
            else:
                await asyncio.sleep(delay)  # stopping already: the deadline bounds the wait
            continue
        if failures:
            log.info("ClickHouse is back after %d failed attempts", failures)
            failures = 0
        await outcomes.written(part)
    return True
