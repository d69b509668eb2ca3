"""Pull consumers: ``PullSource.fetch`` turns client messages into plain ``Delivery`` objects.

A fetch that gets nothing in time returns ``[]`` (the client raises either its own timeout error or
asyncio's; both are caught here); a broken connection raises ``TransientError``, one the client closed
for good ``FatalError`` (the process must restart). Acknowledgements of a
delivery go through ``_Settler``, which turns client errors into ``TransientError`` too.
A source knows the connection that made it only as an ``Owner`` (``client.Broker`` is one), so this
module does not import the client. It must not decide how a delivery is settled: that is ``consumer``'s
job.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from kubenetmon.shared.broker.connection import CLIENT_ERRORS, MSG_ID_HEADER, describe
from kubenetmon.shared.deliveries import ConsumerStats, Delivery
from kubenetmon.shared.errors import FatalError, TransientError

log = logging.getLogger(__name__)


class Owner(Protocol):
    """What a pull source needs of the connection that made it."""

    @property
    def lost(self) -> bool:
        """The connection is closed for good (it will not reconnect)."""
        ...

    async def consumer_info(self, consumer: str, *, stream: str | None = None) -> ConsumerStats: ...

    async def release(self, source: PullSource) -> None:
        """Forget a closed source (deleting its consumer if it was ephemeral)."""
        ...


class PullSource:
    """Fetches batches from one pull consumer. ``fetch`` returns ``[]`` when nothing came in time."""

    def __init__(self, broker: Owner, sub: Any, *, stream: str, consumer: str, ephemeral: bool) -> None:
        self.broker = broker
        self.stream = stream
        self.consumer = consumer
        self.ephemeral = ephemeral
        self._sub: JetStreamContext.PullSubscription = sub

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:  # noqa: ASYNC109 (server-side expiry)
        """Up to ``batch`` deliveries within ``timeout`` seconds; ``TransientError`` if the broker is gone."""
        try:
            msgs: list[Msg] = await self._sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nats' own, and asyncio's (== builtin)
            return []
        except CLIENT_ERRORS as exc:
            if self.broker.lost:  # retrying would spin forever on a connection that will never return
                raise FatalError(f"NATS connection closed for good: {describe(exc)}") from exc
            raise TransientError(f"fetch from {self.stream}/{self.consumer}: {describe(exc)}") from exc
        return [_delivery(m) for m in msgs]

    async def info(self) -> ConsumerStats:
        return await self.broker.consumer_info(self.consumer, stream=self.stream)

    async def close(self) -> None:
        """Stop fetching (an ephemeral consumer is deleted; a durable one stays for the other workers)."""
        try:
            await self._sub.unsubscribe()
        except CLIENT_ERRORS as exc:
            log.debug("unsubscribe failed: %s", describe(exc))
        await self.broker.release(self)


def _delivery(msg: Msg) -> Delivery:
    md = msg.metadata
    headers = msg.headers or {}
    return Delivery(
        _Settler(msg),
        data=msg.data,
        subject=msg.subject,
        headers=headers,
        msg_id=headers.get(MSG_ID_HEADER, ""),
        num_delivered=md.num_delivered,
        stream=md.stream,
        consumer=md.consumer,
        stream_seq=md.sequence.stream,
        timestamp=md.timestamp.timestamp(),
        pending=md.num_pending,
    )


class _Settler:
    """Acknowledgements of one message, with client errors turned into ``TransientError``."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    async def ack(self) -> None:
        await self._call(self._msg.ack())

    async def nak(self, delay: float | None) -> None:
        await self._call(self._msg.nak(delay))

    async def in_progress(self) -> None:
        await self._call(self._msg.in_progress())

    async def term(self) -> None:
        await self._call(self._msg.term())

    @staticmethod
    async def _call(op: Any) -> None:
        try:
            await op
        except CLIENT_ERRORS as exc:
            raise TransientError(f"acknowledgement failed: {describe(exc)}") from exc
