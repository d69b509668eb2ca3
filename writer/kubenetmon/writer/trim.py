"""Room in ENRICHED: once it nears its byte limit, the writers remove the oldest rows they have stored.

Why it exists: every stream refuses new messages when full (``discard: new``) and keeps what it holds
until it ages out (limits retention: ``replay enriched`` reads that history). With the writers down for a
while, ENRICHED fills up; the enrichers then hold their RAW messages, RAW fills up, and the agents keep
accumulating. When the writers come back and drain ENRICHED, nothing would be freed before the oldest
rows aged out (days). So each writer process checks the stream every few seconds, and when it holds
``HIGH`` of its ``max_bytes`` or more (or has less room than the largest message the server takes: a
message that does not fit would be refused for ever), purges its oldest messages down to about ``LOW``
of it, leaving that room: never one above the ``writer`` consumer's ack floor, so only rows that are
already in ClickHouse go (``replay enriched`` loses them; ``replay raw`` can still make them again).
Several writers doing it at once purge the same range.

This module must not touch RAW (replay needs its history: it frees up by age, or by a larger limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final

from kubenetmon.shared import metrics, runtime, topology
from kubenetmon.shared.broker import Broker, StreamStats
from kubenetmon.shared.errors import TransientError

log = logging.getLogger(__name__)

HIGH: Final = 0.75
"""Trim once ENRICHED holds this share of its ``max_bytes``: well below 1, so that a check every
``EVERY_S`` comes before the stream is full and refuses anything (25% of 1 GiB is minutes of output)."""
LOW: Final = 0.5
"""Trim down to about this share."""
EVERY_S: Final = 5.0

TRIMMED = metrics.counter(
    "writer_enriched_trims_total", "Purges of ENRICHED messages the writers had already stored"
)


def trim_below(
    stream: StreamStats, *, ack_floor: int, high: float = HIGH, low: float = LOW, reserve: int = 0
) -> int | None:
    """The sequence to purge below (every message under it goes), or None when nothing should go.

    Only when the stream holds at least ``high`` of its ``max_bytes``, or has less than ``reserve`` bytes
    free (the largest message a publisher may send: one that does not fit would be refused for ever); as
    many of the oldest messages as bring it to about ``low`` of it, and below ``max_bytes - reserve``
    (by their mean size), but never one above ``ack_floor``.
    """
    limit = stream.max_bytes
    if limit <= 0 or stream.messages <= 0 or stream.bytes < min(high * limit, limit - reserve):
        return None
    target = max(0.0, min(low * limit, limit - reserve))
    drop = math.ceil(stream.messages * (stream.bytes - target) / stream.bytes)
    below = min(stream.first_seq + drop, ack_floor + 1)
    return below if below > stream.first_seq else None


async def trim_once(broker: Broker, *, high: float = HIGH, low: float = LOW) -> int:
    """Purge ENRICHED's oldest stored messages if it is nearly full; the first sequence kept (0: none)."""
    stream = await broker.stream_info(topology.ENRICHED)
    consumer = await broker.consumer_info("writer")
    below = trim_below(
        stream, ack_floor=consumer.ack_floor_stream_seq, high=high, low=low, reserve=broker.max_payload
    )
    if below is None:
        return 0
    await broker.purge_below(topology.ENRICHED, below)
    TRIMMED.inc()
    log.info(
        "ENRICHED near its limit: removed the messages below #%d, already in ClickHouse",
        below,
        extra={"bytes": stream.bytes, "max_bytes": stream.max_bytes, "first_seq": stream.first_seq},
    )
    return below


async def trim_loop(broker: Broker, *, stop: asyncio.Event, every_s: float = EVERY_S) -> None:
    """``trim_once`` every ``every_s`` seconds until ``stop``; a failure is logged and tried again."""
    while not stop.is_set():
        try:
            await trim_once(broker)
        except TransientError as exc:
            log.debug("ENRICHED trim skipped: %s", exc)
        await runtime.sleep_or_stop(stop, every_s)
