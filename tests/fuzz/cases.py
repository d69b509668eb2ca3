"""Hypothesis strategies for what the stages may be fed: good messages, and bad ones of every kind.

This module holds what both streams share: cases, the decoder's verdict, the mutations of any message
(truncated, wrong version or kind, wrong types, random bytes or msgpack, bit flips, nesting, lying
length headers, trailing data) and oversized messages; ``cases_raw`` and ``cases_enriched`` hold what
is particular to each. A case is ``(category, payload)``; ``verdict`` says what the decoder of its
stream answers, which is what the DLQ header must say. Unknown top-level fields are allowed within a
major version, so such messages are *good* and must be stored like any other.

Good messages carry known bytes, so the stored sums are exact without asking the code under test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from kubenetmon.shared import schema
from kubenetmon.shared.errors import DecodeError

OBSERVER = "n1"
"""The observer node of good RAW messages: its pods are in the inventory of ``tests.enricher``."""
LOCAL_PODS = [ipaddress.IPv4Address(f"10.1.0.{10 + i}").packed for i in range(4)]
PUBLIC = [ipaddress.IPv4Address(a).packed for a in ("3.5.140.9", "8.8.8.8", "1.1.1.1", "9.9.9.9")]
DIRECT_NODE = "fuzz-direct"
"""``observerNode`` of good ENRICHED messages published straight to the writer."""
U16 = st.integers(0, 0xFFFF)
U64 = st.integers(0, (1 << 64) - 1)
COUNTER = st.integers(0, 10**12)
MUTATIONS = 6
"""Bad cases drawn from one valid message at most (hypothesis pays per example, not per case)."""
PACKABLE_INT = st.integers(-(1 << 63), (1 << 64) - 1)
"""Every integer msgpack can carry."""


@dataclass(frozen=True)
class Draft:
    """A good message before it gets its unique identity (see ``finish_raw``, ``finish_enriched``)."""

    category: str
    fields: dict[str, Any]
    records: int
    bytes: int


@dataclass(frozen=True)
class Case:
    category: str
    payload: bytes
    records: int = 0
    """Good RAW: records kept. Good ENRICHED: rows."""
    bytes: int = 0
    """Good: the bytes the stored rows must sum to."""


def verdict(kind: str, payload: bytes) -> str | None:
    """Why the decoder of ``kind`` (``raw``, ``enriched``) refuses ``payload``; None if it is valid."""
    try:
        (schema.decode_raw if kind == "raw" else schema.decode_enriched)(payload)
    except DecodeError as exc:
        return exc.reason
    return None


def collect(strategy: st.SearchStrategy[Any], count: int, *, seed_value: int) -> list[Any]:
    """``count`` examples drawn by hypothesis from ``strategy`` (generation only, no shrinking)."""
    out: list[Any] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(example: Any) -> None:
        out.append(example)

    gather()
    return out


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


msgpack_values = st.recursive(
    st.none() | st.booleans() | PACKABLE_INT | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


WRONG_TYPES = (
    st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.lists(PACKABLE_INT, max_size=2)
)


def truncated(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


def version(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return pack({**base, "v": draw(PACKABLE_INT.filter(lambda v: v != 1))})


def version_type(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    if draw(st.booleans()):
        return pack({k: v for k, v in base.items() if k != "v"})
    return pack({**base, "v": draw(WRONG_TYPES)})


def kind(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return pack({**base, "t": draw(st.text(max_size=10).filter(lambda t: t != base["t"]) | WRONG_TYPES)})


def field_type(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    name = draw(st.sampled_from([k for k in base if k not in ("v", "t")]))
    wrong = draw(WRONG_TYPES.filter(lambda x: type(x) is not type(base[name])))
    return pack({**base, name: wrong})


def random_bytes(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return bytes(draw(st.binary(max_size=200)))


def random_msgpack(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return pack(draw(msgpack_values))


def flipped(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


def nested(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    depth = draw(st.integers(1100, 5000))  # msgpack's unpacker refuses more than 1024 levels
    return pack({**base, "rows": []})[:-1] + b"\x91" * int(depth) + b"\xc0"


def declared_length(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    header: bytes = draw(st.sampled_from([b"\xdd", b"\xdf", b"\xdb", b"\xc6"]))
    length: int = draw(st.integers(1 << 20, (1 << 32) - 1))
    padding: int = draw(st.integers(0, 8))
    return header + length.to_bytes(4, "big") + b"\x00" * padding


def trailing(base: dict[str, Any], data: bytes, draw: Any) -> bytes:
    return data + pack(draw(msgpack_values))


def oversized(kind: str, size: int) -> bytes:
    """A well-formed map of the given ``kind`` padded with an unknown field to exactly ``size`` bytes."""
    head = pack({"v": 1, "t": kind, "pad": b""})
    pad = size - len(head)
    for _ in range(3):  # the bin header grows with the length
        data = pack({"v": 1, "t": kind, "pad": b"\0" * pad})
        pad -= len(data) - size
    data = pack({"v": 1, "t": kind, "pad": b"\0" * pad})
    assert len(data) == size, (len(data), size)
    return data


GENERIC_MUTATIONS: dict[str, Callable[[dict[str, Any], bytes, Any], bytes]] = {
    "truncated": truncated,
    "version": version,
    "version_type": version_type,
    "kind": kind,
    "field_type": field_type,
    "random_bytes": random_bytes,
    "random_msgpack": random_msgpack,
    "flipped": flipped,
    "nested": nested,
    "declared_length": declared_length,
    "trailing_data": trailing,
}
