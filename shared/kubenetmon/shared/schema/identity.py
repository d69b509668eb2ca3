"""Identities: the message ids the broker deduplicates on and the row ids ClickHouse replaces by.

Why one module: every id here must be stable across processes, platforms and replays (a redelivered or
replayed record must replace its row, never add to it), so how each is made is stated once. The flow
identity packs the flow tuple (``flow.FlowTuple``) at each field's width (its domain's ``code``); that
format is part of the stored data (``flowId``) and must never change. No I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import repeat, starmap
from typing import Any, Final

from xxhash import xxh3_64_intdigest

from kubenetmon.shared.schema.flow import FLOW_FIELDS, FlowTuple

_IDENTITY: Final = struct.Struct("!" + "".join(domain.code for domain in FlowTuple.domains()))
"""A flow tuple packed (``!BBH16s16sHH16s16sHH``); a 4-byte address is zero-padded (family says which)."""
IN_FLIP: Final = 1
"""The ``in`` row's id is the ``out`` row's id with this bit flipped."""


def raw_msg_id(node: str, boot: str, start: int, seq: int, chunk: int) -> str:
    """A RAW record's own id, from its fields: the seed of its rows' identities (``flow_id``)."""
    return f"{node}/{boot}/{start}/{seq}/{chunk}"


def keyed_msg_id(record: str, key: str) -> str:
    """The ``Nats-Msg-Id`` an agent publishes a RAW record under: its id plus the agent's secret key.

    The duplicate window is stream-wide: without the key, any publisher could take a node's next id
    first. Records from agents without a key keep their plain id (``record_of`` reads both).
    """
    return f"{record}/{key}" if key else record


def record_of(msg_id: str) -> str:
    """The record's own id in a RAW ``Nats-Msg-Id``, keyed (six parts) or plain (five)."""
    parts = msg_id.split("/")
    return "/".join(parts[:5]) if len(parts) == 6 else msg_id


def enriched_msg_id(source: str, *, replay: str = "") -> str:
    """The ENRICHED id derived from the RAW id; a replay run adds its own tag so it never collides."""
    return f"enriched/{replay}/{source}" if replay else f"enriched/{source}"


def identities(columns: Sequence[Sequence[Any]]) -> list[bytes]:
    """The identity fields of every row given as columns, packed; ``struct.error`` if out of range."""
    return list(starmap(_IDENTITY.pack, zip(*columns[:FLOW_FIELDS], strict=True)))


def flow_ids(msg_id: str, packed: Iterable[bytes]) -> list[int]:
    """The ``out`` row identity of every row given by its ``identities``; see ``flow_id``."""
    return list(map(xxh3_64_intdigest, packed, repeat(xxh3_64_intdigest(msg_id.encode()))))


def flow_id(msg_id: str, row: FlowTuple, direction: str) -> int:
    """Row identity as an unsigned 64-bit integer, from the RAW record alone.

    Same RAW message + same row + same direction -> same id, whatever the labels and the counters;
    so a redelivered or replayed record replaces its row instead of adding to it. It is XXH3-64 of
    the row's flow fields seeded with XXH3-64 of the message id (stable across processes and
    platforms); the ``in`` id differs from the ``out`` id in the lowest bit. (Any other direction,
    which the enricher never writes, gets its own id: the direction is hashed too.)
    """
    packed = _IDENTITY.pack(*row[:FLOW_FIELDS])
    (out,) = flow_ids(msg_id, [packed])
    if direction == "out":
        return out
    if direction == "in":
        return out ^ IN_FLIP
    return xxh3_64_intdigest(packed + direction.encode(), xxh3_64_intdigest(msg_id.encode()))
