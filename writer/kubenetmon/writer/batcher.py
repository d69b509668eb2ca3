"""Batching of ENRICHED messages into one column-oriented insert, and splitting it again.

A ``Batch`` concatenates the columns of many messages in their table's column order (pod rows for the
flows table, node rows for the node table; a column a message lacks is filled with its zero value, the
wire has no nulls) and remembers which message owns which rows.
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

from kubenetmon.shared.schema import COLUMN_NAMES, COLUMNS, NODE_COLUMNS, EnrichedMessage

T = TypeVar("T")

ZERO: Final[dict[str, Any]] = {"int": 0, "str": "", "bool": False, "bytes16": bytes(16), "map": {}}
POD_NAMES: Final[list[str]] = list(COLUMN_NAMES)
"""The flows table's columns, in its order: a pod row's."""
NODE_NAMES: Final[list[str]] = [*COLUMN_NAMES, *(c.name for c in NODE_COLUMNS)]
"""The node table's columns: a node row's (the flows table's, then ``localKind``)."""
_KIND: Final = NODE_COLUMNS[0].name
_DEFAULTS: Final[tuple[Any, ...]] = tuple(ZERO[c.wire] for c in (*COLUMNS, *NODE_COLUMNS))
_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(NODE_NAMES)}
_BYTES: Final = _INDEX["bytes"]


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """Rows ``start:stop`` of a batch's pod rows (or of its node rows, ``node``) belong to the message
    behind ``owner``."""

    owner: T
    start: int
    stop: int
    size: int
    """Payload size of the message, bytes (for metrics)."""
    report: tuple[Any, ...] | None = None
    """The message's ``agent_reports`` row (``flow_tables.REPORT_COLUMNS`` order), if it carries one."""
    node: bool = False
    """The message holds node rows (``localKind``): its rows are in ``Batch.nodes``."""

    @property
    def rows(self) -> int:
        return self.stop - self.start


def _empty(names: list[str]) -> list[list[Any]]:
    return [[] for _ in names]


@dataclass
class Batch(Generic[T]):
    """The pod rows' columns (``POD_NAMES``), the node rows' (``NODE_NAMES``), and the parts that own them.

    A message is all pod rows or all node rows: ``localKind`` admits only 'node' (``schema.DOMAINS``), so
    a message that has the column holds node rows only, and one without it pod rows only. Each kind is
    concatenated in its own columns, in its table's order, ready for one column-oriented insert each:
    no row is looked at, moved or filtered after the decoder's columns are appended.
    """

    opened_at: float
    columns: list[list[Any]] = field(default_factory=lambda: _empty(POD_NAMES))
    """Pod rows, in ``POD_NAMES`` order (the flows table)."""
    nodes: list[list[Any]] = field(default_factory=lambda: _empty(NODE_NAMES))
    """Node rows, in ``NODE_NAMES`` order (the node table)."""
    parts: list[Part[T]] = field(default_factory=list)
    rows: int = 0
    size: int = 0

    def add(self, message: EnrichedMessage, owner: T, *, size: int = 0) -> None:
        """Append ``message``'s rows, reordered to its table's columns, owned by ``owner``."""
        n = message.row_count
        names = message.columns
        node = _KIND in names
        target = self.nodes if node else self.columns
        start = len(target[0])
        if names == (NODE_NAMES if node else POD_NAMES):  # the enricher's order: no reordering
            for column, values in zip(target, message.data, strict=True):
                column.extend(values)
        else:
            _add_reordered(target, names, message.data, n)
        self.parts.append(Part(owner, start, start + n, size, report_values(message), node))
        self.rows += n
        self.size += size

    @property
    def owners(self) -> list[T]:
        return [p.owner for p in self.parts]

    @property
    def messages(self) -> int:
        return len(self.parts)

    @property
    def kinds(self) -> list[str]:
        """Each row's ``localKind`` in the order of the messages: '' for a pod row, 'node' for a node row."""
        return [kind for p in self.parts for kind in ["node" if p.node else ""] * p.rows]

    def report_columns(self) -> list[list[Any]]:
        """The ledger rows of the batch's messages, column-oriented (empty lists: none)."""
        rows = [p.report for p in self.parts if p.report is not None]
        return [list(col) for col in zip(*rows, strict=True)] if rows else []

    def flow_bytes(self) -> int:
        """Sum of the ``bytes`` column: the traffic this batch accounts for."""
        total: int = sum(self.columns[_BYTES]) + sum(self.nodes[_BYTES])
        return total

    def split(self) -> tuple[Batch[T], Batch[T]]:
        """Two batches, each with about half of the messages (needs at least two)."""
        if len(self.parts) < 2:
            raise ValueError("a batch of one message cannot be split")
        mid = len(self.parts) // 2
        return self._slice(self.parts[:mid]), self._slice(self.parts[mid:])

    def _slice(self, parts: Sequence[Part[T]]) -> Batch[T]:
        # the parts of one kind own consecutive rows of that kind's columns, in the order of the parts
        lo = {kind: min((p.start for p in parts if p.node is kind), default=0) for kind in (False, True)}
        hi = {kind: max((p.stop for p in parts if p.node is kind), default=0) for kind in (False, True)}
        out: Batch[T] = Batch(
            opened_at=self.opened_at,
            columns=[col[lo[False] : hi[False]] for col in self.columns],
            nodes=[col[lo[True] : hi[True]] for col in self.nodes],
        )
        for p in parts:
            base = lo[p.node]
            out.parts.append(Part(p.owner, p.start - base, p.stop - base, p.size, p.report, p.node))
        out.rows = sum(p.rows for p in parts)
        out.size = sum(p.size for p in parts)
        return out


def _add_reordered(
    target: list[list[Any]], names: Sequence[str], data: Sequence[Sequence[Any]], n: int
) -> None:
    """Append columns named ``names`` to ``target`` in its order; a column missing gets its zero value
    (the wire has no nulls; the decoder refused unknown columns)."""
    present = [False] * len(target)
    for name, values in zip(names, data, strict=True):
        i = _INDEX[name]
        target[i].extend(values)
        present[i] = True
    if n and not all(present):
        for i, seen in enumerate(present):
            if not seen:
                target[i].extend([_DEFAULTS[i]] * n)


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
        *(g.link_bytes, g.boundary_bytes),
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
