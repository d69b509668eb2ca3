"""Loading a price book into ClickHouse: idempotent, and a changed book replaces the one in force.

A load appends the book's rows stamped with a new ``loadedAt`` (later than every earlier load, whatever
the clock says) and then deletes the older loads. The cost view reads only the newest load, so a crash
between the two steps, or two processes loading at once, never mixes two books. Loading the same book
again (same digest) does nothing.

``kubenetmon clickhouse migrate`` loads the shipped books plus its ``--price-book`` files every time;
a writer starting up loads the shipped books only when no book was ever loaded, so it never undoes the
overrides an operator loaded.

On a cluster (``cluster``) the price table is one table replicated on every server
(``cluster.REPLICATED_EVERYWHERE``): the insert and the ``DELETE`` mutation each run once, on the
server reached, and Keeper carries them to every replica; the book in force is read locally.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubenetmon.writer.cluster import place
from kubenetmon.writer.cost_tables import PRICES_TABLE
from kubenetmon.writer.flow_tables import fqn
from kubenetmon.writer.pricebook import PRICE_COLUMNS, PriceBook, table_rows
from kubenetmon.writer.sink import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    changed: bool
    digest: str
    entries: int


def in_force(sink: Sink, *, database: str) -> tuple[float, str]:
    """``(loadedAt, digest)`` of the book in force; ``(0.0, '')`` when none was loaded."""
    row = sink.query(
        f"SELECT toFloat64(max(loadedAt)), argMax(book, loadedAt), count() FROM {fqn(database, PRICES_TABLE)}"
    ).rows[0]
    return (float(row[0]), str(row[1])) if int(row[2]) else (0.0, "")


def load_prices(
    sink: Sink, *, database: str, book: PriceBook, only_if_empty: bool = False, cluster: str = ""
) -> Loaded:
    """Make ``book`` the price book in force (unless it already is, or ``only_if_empty`` and one is),
    on ``cluster`` if one is named."""
    last_at, last_digest = in_force(sink, database=database)
    digest = book.digest
    if last_digest == digest or (only_if_empty and last_digest):
        return Loaded(changed=False, digest=last_digest, entries=len(book.entries))
    at = max(round(time.time(), 3), round(last_at + 0.001, 3))
    rows = table_rows(book)
    columns: list[list[Any]] = [[datetime.fromtimestamp(at, UTC)] * len(rows), [digest] * len(rows)]
    columns += [list(c) for c in zip(*rows, strict=True)]
    sink.insert(
        PRICES_TABLE,
        columns,
        names=["loadedAt", "book", *(n for n, _ in PRICE_COLUMNS)],
        types=["DateTime64(3)", "String", *(t for _, t in PRICE_COLUMNS)],
    )
    older = f"ALTER TABLE {fqn(database, PRICES_TABLE)} DELETE WHERE loadedAt < toDateTime64({at:.3f}, 3)"
    for statement in place(older, cluster=cluster):
        sink.command(statement)
    log.info(
        "price book loaded",
        extra={"digest": digest, "entries": len(book.entries), "files": ", ".join(book.files)},
    )
    return Loaded(changed=True, digest=digest, entries=len(book.entries))
