"""Batching of ENRICHED messages into one column-oriented insert, and splitting it again.

A ``Batch`` concatenates the columns of many messages in the table's column order (a column a message
lacks is filled with its zero value; the wire has no nulls) and remembers which message owns which rows.
That ownership is what makes a rejected insert recoverable: ``split`` halves a batch on a message
boundary, so bisection isolates the one message ClickHouse refuses while its neighbours are written.
``Batcher`` decides when the open batch is due: enough rows, or its oldest message is old enough.

A message's ledger row (``report``, for ``agent_reports``) rides on its part, so it is written, split
off and settled with that message's rows.

Pure: no I/O, no clock (callers pass ``now``), no broker. It never acknowledges anything; it only
carries the owner tokens (deliveries, in the worker) so the caller can settle them after the insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from kubenetmon.shared.schema import COLUMN_INDEX, COLUMN_NAMES, COLUMNS, EnrichedMessage

T = TypeVar("T")

ZERO: Final[dict[str, Any]] = {"int": 0, "str": "", "bool": False, "bytes16": bytes(16), "map": {}}
_DEFAULTS: Final[tuple[Any, ...]] = tuple(ZERO[c.wire] for c in COLUMNS)
_BYTES: Final = COLUMN_INDEX["bytes"]


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """Rows ``start:stop`` of a batch belong to the message behind ``owner``."""

    owner: T
    start: int
    stop: int
    size: int
    """Payload size of the message, bytes (for metrics)."""
    report: tuple[Any, ...] | None = None
    """The message's ``agent_reports`` row (``flow_tables.REPORT_COLUMNS`` order), if it carries one."""

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class Batch(Generic[T]):
    """Columns in ``COLUMN_NAMES`` order plus the parts that own their rows."""

    opened_at: float
    columns: list[list[Any]] = field(default_factory=lambda: [[] for _ in COLUMN_NAMES])
    parts: list[Part[T]] = field(default_factory=list)
    rows: int = 0
    size: int = 0

    def add(self, message: EnrichedMessage, owner: T, *, size: int = 0) -> None:
        """Append ``message``'s rows, reordered to the table's columns, owned by ``owner``."""
        n = message.row_count
        present = [False] * len(COLUMN_NAMES)
        for name, values in zip(message.columns, message.data, strict=True):
            i = COLUMN_INDEX[name]  # the decoder refused unknown columns
            self.columns[i].extend(values)
            present[i] = True
        if n and not all(present):
            for i, seen in enumerate(present):
                if not seen:
                    self.columns[i].extend([_DEFAULTS[i]] * n)
        self.parts.append(Part(owner, self.rows, self.rows + n, size, report_values(message)))
        self.rows += n
        self.size += size

    @property
    def owners(self) -> list[T]:
        return [p.owner for p in self.parts]

    @property
    def messages(self) -> int:
        return len(self.parts)

    def report_columns(self) -> list[list[Any]]:
        """The ledger rows of the batch's messages, column-oriented (empty lists: none)."""
        rows = [p.report for p in self.parts if p.report is not None]
        return [list(col) for col in zip(*rows, strict=True)] if rows else []

    def flow_bytes(self) -> int:
        """Sum of the ``bytes`` column: the traffic this batch accounts for."""
        return sum(self.columns[_BYTES])

    def split(self) -> tuple[Batch[T], Batch[T]]:
        """Two batches, each with about half of the messages (needs at least two)."""
        if len(self.parts) < 2:
            raise ValueError("a batch of one message cannot be split")
        mid = len(self.parts) // 2
        return self._slice(self.parts[:mid]), self._slice(self.parts[mid:])

    def _slice(self, parts: Sequence[Part[T]]) -> Batch[T]:
        lo, hi = parts[0].start, parts[-1].stop
        out: Batch[T] = Batch(opened_at=self.opened_at, columns=[col[lo:hi] for col in self.columns])
        for p in parts:
            out.parts.append(Part(p.owner, p.start - lo, p.stop - lo, p.size, p.report))
        out.rows = hi - lo
        out.size = sum(p.size for p in parts)
        return out


def report_values(message: EnrichedMessage) -> tuple[Any, ...] | None:
    """``message``'s ledger row in ``flow_tables.REPORT_COLUMNS`` order, or None."""
    r = message.report
    if r is None:
        return None
    g = r.ledger
    return (
        *(message.source, message.node, r.boot, r.start, r.seconds, r.seq, r.chunk, r.chunks, r.chunk_rows),
        *(g.span_from_ms, g.span_to_ms, g.rows, g.bytes, g.packets, g.flows, g.events_lost, g.table_drops),
        message.enriched_at,
        g.timestamps,
        r.rejected,
    )


@dataclass
class Batcher(Generic[T]):
    """Holds the open batch and says when it is due (``max_rows`` rows or ``max_age`` seconds old)."""

    max_rows: int
    max_age: float
    current: Batch[T] | None = None

    def add(self, message: EnrichedMessage, owner: T, *, now: float, size: int = 0) -> None:
        if self.current is None:
            self.current = Batch(opened_at=now)
        self.current.add(message, owner, size=size)

    def due(self, *, now: float) -> bool:
        b = self.current
        return b is not None and (b.rows >= self.max_rows or now - b.opened_at >= self.max_age)

    def wait(self, *, now: float) -> float | None:
        """Seconds until the open batch is due by age (0 if due now); None without a batch."""
        b = self.current
        if b is None:
            return None
        if b.rows >= self.max_rows:
            return 0.0
        return max(0.0, b.opened_at + self.max_age - now)

    def take(self) -> Batch[T] | None:
        batch, self.current = self.current, None
        return batch

    @property
    def pending_rows(self) -> int:
        return self.current.rows if self.current else 0
