"""Plain types for what the broker hands out: deliveries, publish results, stream and consumer counters.

They exist apart from the broker module so that stages and their tests can use and build them without
any NATS client type: a ``Delivery`` wraps a ``Settler`` (anything with ``ack``/``nak``/``in_progress``/
``term``), which the broker backs with a real message and a test may back with a recorder.

This module must not import the NATS client nor decide any ack policy (that is ``consumer``'s job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class Settler(Protocol):
    async def ack(self) -> None: ...
    async def nak(self, delay: float | None) -> None: ...
    async def in_progress(self) -> None: ...
    async def term(self) -> None: ...


class Delivery:
    """One message delivered by a pull consumer, with its JetStream metadata.

    Settle it exactly once (``ack``, ``nak`` or ``term``; ``in_progress`` any number of times before).
    Errors of these calls are ``TransientError``; ``consumer.settle`` logs them instead of raising.
    """

    __slots__ = (
        "_settler",
        "consumer",
        "data",
        "headers",
        "msg_id",
        "num_delivered",
        "pending",
        "stream",
        "stream_seq",
        "subject",
        "timestamp",
    )

    def __init__(
        self,
        settler: Settler,
        *,
        data: bytes,
        subject: str,
        headers: Mapping[str, str],
        msg_id: str,
        num_delivered: int,
        stream: str,
        consumer: str,
        stream_seq: int,
        timestamp: float,
        pending: int,
    ) -> None:
        self._settler = settler
        self.data = data
        self.subject = subject
        self.headers = headers
        self.msg_id = msg_id
        """``Nats-Msg-Id`` header, ``""`` if the publisher set none."""
        self.num_delivered = num_delivered
        """1 on first delivery, 2 on the first redelivery, ..."""
        self.stream = stream
        self.consumer = consumer
        self.stream_seq = stream_seq
        self.timestamp = timestamp
        """When the message was stored in the stream, Unix seconds."""
        self.pending = pending
        """Messages left for this consumer after this one (the lag, as of delivery)."""

    async def ack(self) -> None:
        await self._settler.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery after ``delay`` seconds (at once if None)."""
        await self._settler.nak(delay)

    async def in_progress(self) -> None:
        """Reset the ack wait: still working on it."""
        await self._settler.in_progress()

    async def term(self) -> None:
        """Never deliver this message again."""
        await self._settler.term()

    def __repr__(self) -> str:
        return (
            f"Delivery({self.stream}#{self.stream_seq} {self.subject} id={self.msg_id!r} "
            f"n={self.num_delivered} {len(self.data)}B)"
        )


@dataclass(frozen=True, slots=True)
class PublishResult:
    stream: str
    seq: int
    duplicate: bool
    """True when the server had already stored this ``Nats-Msg-Id`` within the duplicate window."""


@dataclass(frozen=True, slots=True)
class StreamStats:
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumer_count: int
    leader: str = ""
    """Name of the server leading the stream in a JetStream cluster (``""`` on a single server)."""
    replicas: int = 1
    """Copies the cluster keeps (the stream's ``num_replicas``)."""
    max_bytes: int = -1
    """The stream's byte limit (-1: none)."""


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    stream: str
    name: str
    num_pending: int
    """Messages not yet delivered (the lag)."""
    num_ack_pending: int
    """Delivered, not yet settled."""
    num_redelivered: int
    num_waiting: int
    """Pull requests waiting at the server."""
    ack_floor_stream_seq: int
    delivered_stream_seq: int
