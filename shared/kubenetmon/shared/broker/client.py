"""The ``Broker``: one NATS connection and the JetStream operations kubenetmon needs.

Connection retries forever with a growing, jittered delay per server (see ``connection``) and logs each
disconnect and reconnect. ``publish`` waits for the JetStream acknowledgement and sets ``Nats-Msg-Id``,
so a retried publish inside the duplicate window is dropped by the server (``PublishResult.duplicate``);
within its timeout it sends again while a cluster has no stream leader (an election).
Client failures surface as ``TransientError`` (or ``PoisonError`` for a payload the server can never
take); nats types never leave this package.

This module must not decide what to do with a message: the ack policy lives in ``consumer``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from kubenetmon.shared import backoff, metrics
from kubenetmon.shared import topology as topo
from kubenetmon.shared.broker import answering, reconcile
from kubenetmon.shared.broker.capacity import Capacity, is_store_full
from kubenetmon.shared.broker.connection import (
    CLIENT_ERRORS,
    MSG_ID_HEADER,
    ConnectionEvents,
    connect_options,
    describe,
    header_bytes,
    quiet_close,
)
from kubenetmon.shared.broker.kv import KeyValue, open_bucket
from kubenetmon.shared.broker.pulling import PullSource
from kubenetmon.shared.deliveries import ConsumerStats, PublishResult, StreamStats
from kubenetmon.shared.errors import ConfigError, FatalError, PoisonError, TransientError
from kubenetmon.shared.options import redact_userinfo
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.shared.topology import Change, TopologyReport

log = logging.getLogger(__name__)

PUBLISH_RETRIES = metrics.counter(
    "nats_publish_retries_total",
    "JetStream publishes sent again (same message id) because the stream had no leader at that moment",
    ["stream"],
)
_LEADERLESS_RETRY_S = 0.05
_LEADERLESS_RETRY_MAX_S = 0.5
_NO_MESSAGE = 10057
"""JetStream's error code for a sequence that holds no message (never stored, or already deleted)."""


class Broker:
    """A NATS connection plus the JetStream operations kubenetmon needs; use ``await Broker.connect(...)``."""

    def __init__(self, settings: NatsSettings, nc: Client, *, name: str, events: ConnectionEvents) -> None:
        self.settings = settings
        self.name = name
        self._nc = nc
        self._events = events
        self._sources: set[PullSource] = set()
        self.capacity = Capacity()
        """Which streams refuse new messages because their store is full (``listen`` for readiness)."""
        self._js: JetStreamContext = nc.jetstream(timeout=settings.publish_timeout_s)

    @classmethod
    async def connect(
        cls, settings: NatsSettings, *, name: str, wait_s: float | None = None, inbox: str = ""
    ) -> Broker:
        """Connect, retrying forever (``wait_s=None``) or for ``wait_s`` seconds, then ``TransientError``.

        ``inbox``: the reply subject prefix, if not the user's (``connection.connect_options``)."""
        nc = Client()
        events = ConnectionEvents(name)
        options = connect_options(settings, name=name, events=events, inbox=inbox)
        connecting = asyncio.ensure_future(nc.connect(**options))
        try:
            # not wait_for: the client's retry loop can swallow a cancellation (an inner wait_for that
            # completes as it is cancelled), and wait_for then waits for it forever
            await asyncio.wait({connecting}, timeout=wait_s)
            if not connecting.done():
                raise TimeoutError(f"not connected within {wait_s}s")
            connecting.result()
        except asyncio.CancelledError:  # e.g. stopped while the broker was still unreachable
            await _abandon(connecting, nc, events)
            raise
        except (TimeoutError, *CLIENT_ERRORS) as exc:
            await _abandon(connecting, nc, events)
            reason = events.last_error or repr(exc)
            where = redact_userinfo(", ".join(settings.urls))
            raise TransientError(f"cannot connect to {where}: {redact_userinfo(reason)}") from None
        url = nc.connected_url
        log.info("connected to NATS", extra={"server": f"{url.hostname}:{url.port}" if url else ""})
        return cls(settings, nc, name=name, events=events)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain()

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def max_payload(self) -> int:
        """The largest message the server takes, bytes (its ``max_payload``)."""
        return int(self._nc.max_payload)

    @property
    def lost(self) -> bool:
        """The client closed the connection for good without being asked to (it will not reconnect)."""
        return bool(self._nc.is_closed) and not self._events.closing

    # subjects and names -----------------------------------------------------------------------------

    def raw_subject(self, node: str) -> str:
        return topo.raw_subject(self.settings, node)

    def enriched_subject(self, node: str) -> str:
        return topo.enriched_subject(self.settings, node)

    def dlq_subject(self, stage: str) -> str:
        return topo.dlq_subject(self.settings, stage)

    def meta_subject(self, resource: str) -> str:
        return topo.meta_subject(self.settings, resource)

    def stream_name(self, kind: str) -> str:
        return topo.stream_name(self.settings, kind)

    # publishing -------------------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a deadline for the server's ack, not for the call)
    ) -> PublishResult:
        """Publish to JetStream and wait for the server's ack; ``TransientError`` if it does not come,
        ``StoreFullError`` if the stream refused it for want of room."""
        hdrs = dict(headers) if headers else {}
        if msg_id:
            hdrs[MSG_ID_HEADER] = msg_id
        size, limit = len(payload) + header_bytes(hdrs), self._nc.max_payload
        if size > limit:  # the server would not refuse it: it would close the whole connection
            raise PoisonError("oversized", f"{size} bytes with headers > the server's max payload {limit}")
        try:
            ack = await self._publish_within(
                subject, payload, hdrs, timeout or self.settings.publish_timeout_s
            )
        except nats.errors.MaxPayloadError as exc:
            raise PoisonError("oversized", f"{len(payload)} bytes: {exc}") from None
        except nats.js.errors.APIError as exc:
            if is_store_full(exc):
                raise self.capacity.refused(self._kind(subject), exc, subject=subject) from None
            raise TransientError(f"publish to {subject} failed: {describe(exc)}") from exc
        except CLIENT_ERRORS as exc:
            raise TransientError(f"publish to {subject} failed: {describe(exc)}") from exc
        except (TypeError, ValueError, KeyError) as exc:  # an answer that is no stream's acknowledgement
            raise PoisonError("not_a_stream", f"{subject} answered with no JetStream ack: {exc}") from None
        self.capacity.accepted(self._kind(subject))
        return PublishResult(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))

    async def _publish_within(
        self, subject: str, payload: bytes, headers: dict[str, str], budget_s: float
    ) -> api.PubAck:
        """Publish, sending again (same headers, so the same ``Nats-Msg-Id``) while the answer is "no
        responders" and ``budget_s`` lasts.

        No responders is what a JetStream cluster answers at once while the stream has no leader (an
        election after a member died): retried here, an election shorter than the publish timeout costs
        the caller nothing. A timeout is not retried: it spent the budget, and the caller's retry (same
        id) is dropped as a duplicate if the first copy was stored after all.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        for attempt in itertools.count():
            try:
                return await self._js.publish(subject, payload, timeout=budget_s, headers=headers)
            except nats.js.errors.NoStreamResponseError:
                pause = backoff.exponential(
                    attempt, base_s=_LEADERLESS_RETRY_S, max_s=_LEADERLESS_RETRY_MAX_S
                )
                budget_s = deadline - loop.time() - pause
                if budget_s <= 0:
                    raise
                PUBLISH_RETRIES.labels(self._kind(subject)).inc()
                await asyncio.sleep(pause)  # backoff while the cluster elects a leader
        raise AssertionError("unreachable")

    def _kind(self, subject: str) -> str:
        """The stream kind (``raw``, ``enriched``, ...) of one of our subjects, else ``other``."""
        kind = subject.removeprefix(self.settings.subject_prefix + ".").partition(".")[0]
        return kind if kind in topo.KINDS else "other"

    # answering requests -----------------------------------------------------------------------------

    async def serve(
        self, subject: str, handler: Callable[[bytes], Awaitable[bytes | None]], *, queue: str, limit: int
    ) -> Callable[[], Awaitable[None]]:
        """Answer core NATS requests on ``subject`` with ``handler`` (``None``: no answer); returns a stop.

        Members of one ``queue`` group share the requests; up to ``limit`` are handled at once.
        """
        return await answering.serve(self._nc, self.settings, subject, handler, queue=queue, limit=limit)

    # topology ---------------------------------------------------------------------------------------

    async def ensure_topology(self) -> TopologyReport:
        """Create or reconcile the three streams and two durable consumers; report what was done."""
        return await reconcile.ensure_topology(self._js, self.settings)

    async def ensure_bucket(self, name: str) -> Change:
        """Create key-value bucket ``name`` or reconcile its replicas in place; report what was done."""
        return await reconcile.ensure_bucket(self._js, self.settings, name)

    async def delete_topology(self) -> None:
        """Delete the streams (with their consumers) and key-value buckets (tests, deliberate resets)."""
        await reconcile.delete_topology(self._js, self.settings)

    # consuming --------------------------------------------------------------------------------------

    async def pull(self, consumer: str) -> PullSource:
        """Bind to durable pull consumer ``enricher`` or ``writer`` (created by ``ensure_topology``)."""
        spec = topo.consumer_spec(self.settings, consumer)
        try:
            await self._js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            raise ConfigError(
                f"consumer {spec.durable} on stream {spec.stream} does not exist: run `kubenetmon nats init`"
            ) from None
        except CLIENT_ERRORS as exc:
            if self.lost:  # retrying would spin forever on a connection that will never return
                raise FatalError(f"NATS connection closed for good: {describe(exc)}") from exc
            raise TransientError(f"consumer {spec.durable}: {describe(exc)}") from exc
        sub = await self._js.pull_subscribe_bind(consumer=spec.durable, stream=spec.stream)
        return self._track(PullSource(self, sub, stream=spec.stream, consumer=spec.durable, ephemeral=False))

    async def ephemeral(
        self,
        kind: str,
        *,
        start_time: float | None = None,
        start_seq: int | None = None,
        filter_subject: str | None = None,
        inactive_s: float = 300.0,
    ) -> PullSource:
        """A new pull consumer over stream ``kind`` from a Unix time or a sequence (else all), for replay.

        Explicit ack like the durables, so ``consume``/``settle`` work unchanged; the server deletes it
        after ``inactive_s`` without a fetch, and ``PullSource.close()`` deletes it at once.
        """
        stream = self.stream_name(kind)
        name = f"replay-{uuid.uuid4().hex[:16]}"
        config = api.ConsumerConfig(
            name=name,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_s,
            max_deliver=topo.SERVER_MAX_DELIVER,
            max_ack_pending=self.settings.max_ack_pending,
            filter_subject=filter_subject or topo.stream_subjects(self.settings, kind),
            inactive_threshold=inactive_s,
            mem_storage=True,
            num_replicas=1,
        )
        if start_seq is not None:
            config.deliver_policy, config.opt_start_seq = api.DeliverPolicy.BY_START_SEQUENCE, start_seq
        elif start_time is not None:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.datetime.fromtimestamp(start_time, datetime.UTC)
        try:
            await self._js.add_consumer(stream, config=config)
        except CLIENT_ERRORS as exc:
            raise TransientError(f"ephemeral consumer on {stream}: {describe(exc)}") from exc
        sub = await self._js.pull_subscribe_bind(consumer=name, stream=stream)
        return self._track(PullSource(self, sub, stream=stream, consumer=name, ephemeral=True))

    async def bucket(self, name: str, *, create: bool = False) -> KeyValue | None:
        """Key-value bucket ``<stream prefix>_<name>`` (created with the streams' replicas and storage if
        ``create``); None if it does not exist and ``create`` is false."""
        return await open_bucket(
            self._js,
            topo.bucket_name(self.settings, name),
            create=create,
            replicas=self.settings.replicas,
            storage=self.settings.storage,
        )

    def _track(self, source: PullSource) -> PullSource:
        self._sources.add(source)
        return source

    async def release(self, source: PullSource) -> None:
        """Forget a closed pull source, deleting its consumer if ephemeral (``PullSource.close`` calls it)."""
        if source.ephemeral:
            await self._delete_consumer(source.stream, source.consumer)
        self._sources.discard(source)

    async def stream_info(self, kind: str) -> StreamStats:
        name = self.stream_name(kind)
        try:
            info = await self._js.stream_info(name)
        except CLIENT_ERRORS as exc:
            raise TransientError(f"stream {name}: {describe(exc)}") from exc
        s = info.state
        leader = (info.cluster.leader or "") if info.cluster else ""
        return StreamStats(
            name,
            s.messages,
            s.bytes,
            s.first_seq,
            s.last_seq,
            s.consumer_count,
            leader=leader,
            replicas=info.config.num_replicas or 1,
            max_bytes=info.config.max_bytes if info.config.max_bytes is not None else -1,
        )

    async def purge_below(self, kind: str, seq: int) -> bool:
        """Remove every message of stream ``kind`` with a sequence below ``seq`` (True when done)."""
        name = self.stream_name(kind)
        try:
            return await self._js.purge_stream(name, seq=seq)
        except CLIENT_ERRORS as exc:
            raise TransientError(f"purge {name} below #{seq}: {describe(exc)}") from exc

    async def delete_message(self, kind: str, seq: int) -> bool:
        """Remove message ``seq`` from stream ``kind`` (a re-driven DLQ entry); False if already gone."""
        name = self.stream_name(kind)
        try:
            await self._js.delete_msg(name, seq)
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NO_MESSAGE:
                return False
            raise TransientError(f"delete {name}#{seq}: {describe(exc)}") from exc
        except CLIENT_ERRORS as exc:
            raise TransientError(f"delete {name}#{seq}: {describe(exc)}") from exc
        return True

    async def consumer_info(self, consumer: str, *, stream: str | None = None) -> ConsumerStats:
        """Counters of a consumer (a durable by name, or any of ``stream``): lag, in flight, redelivered."""
        stream = stream or topo.consumer_spec(self.settings, consumer).stream
        try:
            info = await self._js.consumer_info(stream, consumer)
        except CLIENT_ERRORS as exc:
            raise TransientError(f"consumer {stream}/{consumer}: {describe(exc)}") from exc
        return ConsumerStats(
            stream=stream,
            name=consumer,
            num_pending=info.num_pending or 0,
            num_ack_pending=info.num_ack_pending or 0,
            num_redelivered=info.num_redelivered or 0,
            num_waiting=info.num_waiting or 0,
            ack_floor_stream_seq=info.ack_floor.stream_seq if info.ack_floor else 0,
            delivered_stream_seq=info.delivered.stream_seq if info.delivered else 0,
        )

    async def _delete_consumer(self, stream: str, name: str) -> None:
        try:
            await self._js.delete_consumer(stream, name)
        except CLIENT_ERRORS as exc:
            log.debug("could not delete consumer %s/%s: %s", stream, name, describe(exc))

    # shutdown ---------------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Close every pull source, flush pending publishes and acks, then close. Safe to call twice."""
        if self._nc.is_closed or self._nc.is_draining:
            return
        self._events.closing = True
        # Pull subscriptions are closed first: the client's drain would otherwise wait for their
        # leftover status messages to be consumed, which nothing does. Unsettled deliveries are
        # redelivered after the ack wait, to this or another worker.
        for source in list(self._sources):
            await source.close()
        try:
            await self._nc.drain()
        except CLIENT_ERRORS as exc:
            log.warning("NATS drain failed, closing: %s", describe(exc))
            await quiet_close(self._nc)

    async def close(self) -> None:
        """Close at once, without flushing."""
        self._events.closing = True
        await quiet_close(self._nc)


async def _abandon(connecting: asyncio.Future[None], nc: Client, events: ConnectionEvents) -> None:
    """Stop a connection attempt: cancel it, close the client, and never wait on either unbounded."""
    events.closing = True
    for attempt in range(3):  # a cancellation the client swallowed is repeated, after closing it
        if connecting.done():
            break
        connecting.cancel()
        await asyncio.wait({connecting}, timeout=1.0)
        if attempt == 0 and not connecting.done():
            await asyncio.wait({asyncio.ensure_future(quiet_close(nc))}, timeout=2.0)
    if connecting.done() and not connecting.cancelled():
        connecting.exception()  # retrieved: a failed attempt is no unhandled error
    await asyncio.wait({asyncio.ensure_future(quiet_close(nc))}, timeout=2.0)
