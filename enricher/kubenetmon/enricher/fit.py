"""Fit ENRICHED output into the server's max payload: split by rows, and cut a value that alone cannot fit.

Why it exists: one huge label (a 1 MiB annotation-sized value through ``--inventory``) used to push a
whole ENRICHED message over the server's max payload, and every row of the report was dead-lettered with
it. Here a message that does not fit is split in halves by rows until each part fits; a single row that
still does not fit has each string value longer than ``MAX_VALUE_CHARS`` cut to that many characters,
with a warning naming the pod and the column, counted in ``kubenetmon_enricher_cut_values_total``. Its
bytes and packets are never touched, and no other row is affected. Only a row that does not fit even
then (impossible with the columns of this schema) is refused, as ``oversized``.

The common case never comes here: the worker calls ``fitted`` only for a payload over the bound.
Pure apart from the log line and the counter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Final

from kubenetmon.enricher import metrics as m
from kubenetmon.shared import schema
from kubenetmon.shared.errors import PoisonError

log = logging.getLogger(__name__)

MAX_VALUE_CHARS: Final = 1024
"""Longest string value kept in a row that alone would not fit in one message (Kubernetes names are at
most 253 characters, label values 63: only annotation-sized values are ever cut)."""
HEADROOM: Final = 1024
"""Bytes kept free under the server's max payload for the message's headers (``Nats-Msg-Id``)."""


def fitted(message: schema.EnrichedMessage, *, limit: int) -> list[bytes]:
    """``message`` as ENRICHED payloads of at most ``limit`` bytes each (the report in the first)."""
    columns = [list(col) for col in message.data]
    return list(_parts(message, columns, 0, message.row_count, limit=limit, first=True))


def _encode(message: schema.EnrichedMessage, columns: Sequence[Sequence[Any]], *, first: bool) -> bytes:
    part = schema.EnrichedMessage(
        message.source,
        message.node,
        message.enriched_at,
        message.columns,
        columns,
        report=message.report if first else None,
    )
    return schema.encode_enriched(part)


def _parts(
    message: schema.EnrichedMessage, columns: list[list[Any]], lo: int, hi: int, *, limit: int, first: bool
) -> Iterator[bytes]:
    payload = _encode(message, [col[lo:hi] for col in columns], first=first)
    if len(payload) <= limit:
        yield payload
        return
    if hi - lo > 1:
        mid = (lo + hi) // 2
        yield from _parts(message, columns, lo, mid, limit=limit, first=first)
        yield from _parts(message, columns, mid, hi, limit=limit, first=False)
        return
    values = {name: col[lo] for name, col in zip(message.columns, columns, strict=True)}
    row = [_cut(message, name, value, values) for name, value in values.items()]
    payload = _encode(message, [[value] for value in row], first=first)
    if len(payload) > limit:
        raise PoisonError("oversized", f"one row of {message.source} needs {len(payload)} bytes > {limit}")
    yield payload


def _cut(message: schema.EnrichedMessage, column: str, value: Any, row: dict[str, Any]) -> Any:
    if type(value) is not str or len(value) <= MAX_VALUE_CHARS:
        return value
    m.CUT_VALUES.labels(column).inc()
    pod = _pod(column, row)
    log.warning(
        "cut %s of pod %s from %d to %d characters: its row of %s did not fit in one message",
        column,
        pod,
        len(value),
        MAX_VALUE_CHARS,
        message.source,
        extra={"column": column, "pod": pod, "source": message.source},
    )
    return value[:MAX_VALUE_CHARS]


def _pod(column: str, row: dict[str, Any]) -> str:
    """``namespace/name`` of the pod a column's value belongs to (the remote pod's for ``remote*``)."""
    side = "remote" if column.startswith("remote") else "local"
    namespace, name = str(row.get(f"{side}Namespace", "")), str(row.get(f"{side}Pod", ""))
    return f"{namespace[:253]}/{name[:253]}" if name else f"(no pod, {side} side)"
