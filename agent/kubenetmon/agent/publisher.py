"""Sending reports to the RAW stream: each chunk with its deterministic ``Nats-Msg-Id``, acks awaited.

A report is sent whole or not at all from the caller's point of view: every chunk is published,
pipelined (up to ``window`` awaiting their ack at once); if any fails, ``TransientError`` is raised after
the others settled, and the caller sends the whole report again later. Chunks that did reach the stream
are then dropped by the server as duplicates (same message id), so a retry never counts twice within the
duplicate window.
A chunk the server can never take (larger than its max payload) is reported as ``Oversized``.

A duplicate acknowledgement on a report's first send (``fresh``) means someone else's message already
holds one of its ids: this agent never sent it, so the report's bytes are not in the stream. That is
logged as an error naming the ids, counted (``kubenetmon_agent_report_id_taken_total``) and reported in
``Sent.taken``; it should never happen, since ids carry the agent's secret key (see ``reports``).

This module must not decide when to retry or what to do with an oversized chunk: the service does.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kubenetmon.agent import metrics
from kubenetmon.agent.reports import Report
from kubenetmon.shared.broker import Broker, connect_ready
from kubenetmon.shared.errors import PoisonError, StoreFullError, TransientError
from kubenetmon.shared.schema import record_of
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.shared.topology import agent_inbox

log = logging.getLogger(__name__)


class Oversized(Exception):
    """Chunks of a report the server refused as larger than its max payload."""

    def __init__(self, chunks: list[int]) -> None:
        super().__init__(f"chunks {chunks} exceed the server's max payload")
        self.chunks = chunks


@dataclass(frozen=True, slots=True)
class Sent:
    messages: int
    duplicates: int
    bytes: int
    taken: int = 0
    """Duplicates on a first send: ids someone else had already used (see the module docstring)."""


class Publisher:
    """One NATS connection used to publish reports of one node."""

    def __init__(self, settings: NatsSettings, *, node: str, window: int) -> None:
        # A token file holds a per-node identity (auth callout): replies come to this node's own
        # inbox, and the identity may publish this node's reports and nothing else (no stream INFO).
        self.identity = bool(settings.token_file)
        self.settings = settings
        self.node = node
        self.window = window
        self._broker: Broker | None = None

    @property
    def connected(self) -> bool:
        return self._broker is not None and self._broker.connected

    @property
    def store_full(self) -> bool:
        """RAW refused the last report for want of room (the agent keeps accumulating meanwhile)."""
        return self._broker is not None and bool(self._broker.capacity.full)

    async def connect(self) -> Broker:
        """The connection, made on first use (one attempt; ``TransientError`` if the broker is down).

        A connection the client closed for good is replaced: it gives up reconnecting when the server
        refuses it, e.g. a per-node identity offered before the auth service was back after a restart.
        """
        if self._broker is not None and self._broker.lost:
            log.warning("the NATS connection was closed for good; connecting again")
            broker, self._broker = self._broker, None
            await broker.close()
        if self._broker is None:
            # a conflict is logged, not raised: the agent keeps publishing
            self._broker = await connect_ready(
                self.settings,
                name=f"agent-{self.node}",
                wait_s=self.settings.connect_timeout_s,
                ensure=not self.identity,
                strict=False,
                log=log,
                inbox=agent_inbox(self.node) if self.identity else "",
            )
        return self._broker

    async def send(self, report: Report, *, fresh: bool = False) -> Sent:
        """Publish every chunk of ``report`` and wait for all acks; ``fresh``: never offered before."""
        broker = await self.connect()
        subject = broker.raw_subject(self.node)
        gate = asyncio.Semaphore(self.window)
        failures: list[BaseException] = []
        oversized: list[int] = []
        duplicates: list[int] = []

        async def one(i: int, payload: bytes) -> None:
            async with gate:
                try:
                    result = await broker.publish(subject, payload, msg_id=report.msg_id(i))
                except PoisonError as exc:
                    if exc.reason != "oversized":
                        raise
                    oversized.append(i)
                    return
                except TransientError as exc:  # StoreFullError too: logged once by the broker
                    failures.append(exc)
                    return
                if result.duplicate:
                    duplicates.append(i)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(report.chunks)))
        if failures:
            full = sum(isinstance(f, StoreFullError) for f in failures)
            metrics.PUBLISH_FAILURES.labels("store_full").inc(full)
            metrics.PUBLISH_FAILURES.labels("unavailable").inc(len(failures) - full)
            raise TransientError(
                f"{len(failures)} of {len(report.chunks)} chunks not acknowledged: {failures[0]}"
            )
        if oversized:
            metrics.PUBLISH_FAILURES.labels("oversized").inc(len(oversized))
            raise Oversized(sorted(oversized))
        taken = sorted(duplicates) if fresh else []
        if taken:
            _report_taken(report, taken)
        return Sent(len(report.chunks), len(duplicates), report.size, len(taken))

    async def close(self) -> None:
        """Flush and close; best effort (whatever was not acknowledged is still on disk)."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            try:
                await (broker.drain() if broker.connected else broker.close())
            except (RuntimeError, OSError) as exc:  # the client can fail to close a dead transport
                log.warning("closing the NATS connection failed: %r", exc)


def _report_taken(report: Report, chunks: list[int]) -> None:
    metrics.IDS_TAKEN.inc(len(chunks))
    log.error(
        "report id already taken: the stream already held a message under the id of a report this "
        "agent had never sent; its bytes are not in the stream (someone else published under this "
        "node's ids)",
        extra={
            "seq": report.seq,
            "start": report.start,
            "chunks": chunks,
            "ids": [record_of(report.msg_id(i)) for i in chunks],  # without the key: never logged
        },
    )
