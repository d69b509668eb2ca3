"""The ack policy, in one place: what happens to a delivery once a stage has tried to handle it.

- ``Ack()``: the downstream effect succeeded; acknowledge.
- ``Retry(reason)``: try again later: ``nak`` with the shared backoff (by delivery count); on the last
  allowed delivery (``max_deliver``) the message goes to the DLQ with reason ``max_deliver`` instead.
- A delivery past ``max_deliver`` (``exhausted``: its worker was killed holding it, its settle was lost,
  or the DLQ could not take it) goes to the DLQ unhandled. The server itself never gives up on a message
  (``topology.SERVER_MAX_DELIVER``), so counting here is what bounds the deliveries, and nothing is
  dropped when the last one cannot be dead-lettered.
- ``Retry(STORE_FULL)``: the stream the result goes to is full (``StoreFullError``). Never counted
  towards ``max_deliver`` and never dead-lettered for it: ``consume`` holds such deliveries (in
  progress, so the server neither redelivers them nor counts a delivery) and handles them again until
  the stream takes the result; that also stops fetching, so the backlog stays where it is.
- ``Poison(reason, detail)``: it will never succeed: publish it to the DLQ with headers saying where it
  came from and why, then ``term`` it. If the DLQ publish fails it is nak'ed, never dropped.

``classify`` maps an exception to an outcome (the only place that does), and ``consume`` is the fetch ->
handle -> settle loop used by the enricher and replay; the writer uses ``pull`` + ``settle`` itself.
Errors while acknowledging are logged and counted, never raised: the message is then redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff, metrics
from kubenetmon.shared.broker import Broker, PullSource
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import PoisonError, StoreFullError, TransientError
from kubenetmon.shared.runtime import sleep_or_stop

log = logging.getLogger(__name__)

H_STAGE: Final = "Kubenetmon-Stage"
H_REASON: Final = "Kubenetmon-Reason"
H_DETAIL: Final = "Kubenetmon-Detail"
H_ORIGINAL_SUBJECT: Final = "Kubenetmon-Original-Subject"
H_ORIGINAL_MSG_ID: Final = "Kubenetmon-Original-Msg-Id"
H_ORIGINAL_STREAM: Final = "Kubenetmon-Original-Stream"
H_STREAM_SEQ: Final = "Kubenetmon-Stream-Seq"
H_NUM_DELIVERED: Final = "Kubenetmon-Num-Delivered"
H_OMITTED_BYTES: Final = "Kubenetmon-Omitted-Bytes"
"""Set when the DLQ entry carries no body: the original's size; read it from its stream and sequence."""
STORE_FULL: Final = "store_full"
"""The ``Retry`` reason of a result a full stream refused."""
_DETAIL_MAX: Final = 512
_SUMMARY_EVERY_S: Final = 30.0

SETTLED = metrics.counter("messages_settled_total", "Deliveries settled, by outcome", ["stage", "outcome"])
DEAD_LETTERED = metrics.counter(
    "dlq_messages_total", "Messages sent to the DLQ, by reason", ["stage", "reason"]
)
SETTLE_ERRORS = metrics.counter("settle_errors_total", "Failed ack/nak/term/DLQ publishes", ["stage"])
FETCH_ERRORS = metrics.counter("fetch_errors_total", "Failed fetches from a pull consumer", ["stage"])
HANDLE_SECONDS = metrics.histogram("handle_seconds", "Time to handle one fetched batch", ["stage"])


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    delay: float | None = None
    """Seconds before redelivery; None: the shared backoff for this delivery count."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Poison:
    reason: str
    detail: str = ""


Outcome = Ack | Retry | Poison
ACK: Final = Ack()
Handler = Callable[[list[Delivery]], Awaitable[Sequence[Outcome]]]


def classify(exc: BaseException) -> Outcome:
    """Poison (``DecodeError`` too) -> DLQ; transient -> retry; other -> retry, logged."""
    if isinstance(exc, PoisonError):
        return Poison(exc.reason, exc.detail)
    if isinstance(exc, StoreFullError):
        return Retry(STORE_FULL, detail=str(exc))
    if isinstance(exc, TransientError):
        return Retry("transient", detail=str(exc))
    log.error("unexpected error while handling a message: %r", exc, exc_info=exc)
    return Retry("error", detail=repr(exc))


async def settle(broker: Broker, delivery: Delivery, outcome: Outcome, *, stage: str) -> str:
    """Apply ``outcome`` to ``delivery``; returns what was done: ``ack``, ``nak``, ``dlq`` or ``failed``."""
    try:
        if isinstance(outcome, Ack):
            await delivery.ack()
            done = "ack"
        elif isinstance(outcome, Retry):
            done = await _retry(broker, delivery, outcome, stage=stage)
        else:
            done = await _dead_letter(broker, delivery, outcome.reason, outcome.detail, stage=stage)
    except TransientError as exc:
        SETTLE_ERRORS.labels(stage).inc()
        log.warning(
            "could not settle %r (%s): %s; it will be redelivered", delivery, type(outcome).__name__, exc
        )
        return "failed"
    SETTLED.labels(stage, done).inc()
    return done


def exhausted(delivery: Delivery, max_deliver: int) -> Poison | None:
    """The DLQ verdict on a delivery past ``max_deliver``, else None. Its earlier deliveries were never
    settled, so it goes to the DLQ without being handled: a message that kills its worker must not kill
    every worker in turn, forever."""
    if delivery.num_delivered <= max_deliver:
        return None
    return Poison("max_deliver", f"not settled in {delivery.num_delivered - 1} deliveries")


async def _retry(broker: Broker, delivery: Delivery, retry: Retry, *, stage: str) -> str:
    settings = broker.settings
    if delivery.num_delivered >= settings.max_deliver and retry.reason != STORE_FULL:
        detail = f"{retry.reason} after {delivery.num_delivered} deliveries: {retry.detail}".rstrip(": ")
        return await _dead_letter(broker, delivery, "max_deliver", detail, stage=stage)
    delay = retry.delay if retry.delay is not None else settings.backoff_delay(delivery.num_delivered)
    await delivery.nak(delay)
    return "nak"


async def _dead_letter(broker: Broker, delivery: Delivery, reason: str, detail: str, *, stage: str) -> str:
    subject, msg_id = broker.dlq_subject(stage), f"dlq/{stage}/{delivery.stream}/{delivery.stream_seq}"
    headers = dlq_headers(delivery, stage=stage, reason=reason, detail=detail)
    try:
        try:
            await broker.publish(subject, delivery.data, msg_id=msg_id, headers=headers)
        except PoisonError:
            # Too big for the server once the DLQ headers are added: record the verdict without the
            # body, which stays in its own stream at H_STREAM_SEQ (never nak it forever).
            headers[H_OMITTED_BYTES] = str(len(delivery.data))
            await broker.publish(subject, b"", msg_id=msg_id, headers=headers)
    except (TransientError, PoisonError) as exc:
        # Never term what the DLQ did not take: nak it, so it is retried (and dead-lettered) later.
        SETTLE_ERRORS.labels(stage).inc()
        # a full DLQ was said once by the broker (store full): not one line per message
        level = logging.DEBUG if isinstance(exc, StoreFullError) else logging.ERROR
        log.log(level, "DLQ publish failed for %r (%s): %s; nak'ed instead", delivery, reason, exc)
        await delivery.nak(broker.settings.backoff_delay(delivery.num_delivered))
        return "nak"
    await delivery.term()
    DEAD_LETTERED.labels(stage, reason).inc()
    log.warning("dead-lettered %r: %s %s", delivery, reason, _clean(detail)[:200])
    return "dlq"


def dlq_headers(delivery: Delivery, *, stage: str, reason: str, detail: str) -> dict[str, str]:
    """The original's own headers (except ``Nats-*``) plus where it came from and why it failed."""
    headers = {k: v for k, v in delivery.headers.items() if not k.lower().startswith("nats-")}
    headers.update(
        {
            H_STAGE: stage,
            H_REASON: _clean(reason),
            H_DETAIL: _clean(detail),
            H_ORIGINAL_SUBJECT: delivery.subject,
            H_ORIGINAL_MSG_ID: _clean(delivery.msg_id),
            H_ORIGINAL_STREAM: delivery.stream,
            H_STREAM_SEQ: str(delivery.stream_seq),
            H_NUM_DELIVERED: str(delivery.num_delivered),
        }
    )
    return headers


def _clean(text: str) -> str:
    """A header value: one line of printable ASCII, bounded."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")[:_DETAIL_MAX]


async def consume(
    broker: Broker,
    *,
    consumer: str | PullSource,
    handler: Handler,
    stop: asyncio.Event,
    batch: int,
    fetch_timeout: float,
    stage: str,
) -> None:
    """Fetch -> ``handler`` -> settle, until ``stop`` is set; the batch in hand is always finished.

    ``handler`` returns one outcome per delivery, in order. If it raises, ``classify`` decides for the
    whole batch, so handlers should catch per-message problems and return ``Poison`` for those alone.
    ``fetch_timeout`` bounds how long a stop request waits for an idle fetch. Binding to a durable
    consumer is retried like a fetch (a cluster electing the consumer's leader answers with timeouts).
    """
    if isinstance(consumer, str):
        bound = await _bind(broker, consumer, stop=stop, stage=stage)
        if bound is None:
            return
        source = bound
    else:
        source = consumer
    tally = _Tally(stage)
    failures = 0
    try:
        while not stop.is_set():
            try:
                deliveries = await source.fetch(batch, fetch_timeout)
            except TransientError as exc:
                failures += 1
                await _back_off(broker, stop, f"fetch from {source.consumer}", failures, exc, stage=stage)
                continue
            failures = 0
            fresh = []
            for delivery in deliveries:
                if (verdict := exhausted(delivery, broker.settings.max_deliver)) is None:
                    fresh.append(delivery)
                else:
                    tally.add(await settle(broker, delivery, verdict, stage=stage))
            deliveries = fresh
            held = await _settle_all(broker, deliveries, handler, tally, stage=stage)
            if held:
                await _hold(broker, held, handler, tally, stop=stop, stage=stage)
            tally.maybe_log()
    finally:
        tally.maybe_log(force=True)
        if isinstance(consumer, str):
            await source.close()


async def _settle_all(
    broker: Broker, deliveries: list[Delivery], handler: Handler, tally: _Tally, *, stage: str
) -> list[Delivery]:
    """Handle and settle ``deliveries``; those whose result a full stream refused are returned unsettled."""
    held: list[Delivery] = []
    if not deliveries:
        return held
    outcomes = await _handle(handler, deliveries, stage=stage)
    for delivery, outcome in zip(deliveries, outcomes, strict=True):
        if isinstance(outcome, Retry) and outcome.reason == STORE_FULL:
            held.append(delivery)
        else:
            tally.add(await settle(broker, delivery, outcome, stage=stage))
    return held


async def _hold(
    broker: Broker,
    held: list[Delivery],
    handler: Handler,
    tally: _Tally,
    *,
    stop: asyncio.Event,
    stage: str,
) -> None:
    """Keep ``held`` in progress and handle them again, backing off, until the full stream takes their
    results or ``stop`` is set (then they are nak'ed: redelivered later, never dead-lettered for it)."""
    settings = broker.settings
    attempt = 0
    while held and not stop.is_set():
        attempt += 1
        for delivery in held:
            try:
                await delivery.in_progress()
            except TransientError as exc:
                log.debug("in-progress for %r failed: %s", delivery, exc)
        await sleep_or_stop(stop, min(settings.backoff_delay(attempt), settings.ack_wait_s / 3))
        if not stop.is_set():
            held = await _settle_all(broker, held, handler, tally, stage=stage)
        if held and backoff.now_and_then(attempt, every=30):
            log.warning(
                "%s: holding %d deliveries until the stream has room (attempt %d)", stage, len(held), attempt
            )
    for delivery in held:
        tally.add(await settle(broker, delivery, Retry(STORE_FULL), stage=stage))


async def _bind(broker: Broker, consumer: str, *, stop: asyncio.Event, stage: str) -> PullSource | None:
    """The durable pull consumer, retried with the shared backoff until bound; None once ``stop`` is set."""
    failures = 0
    while not stop.is_set():
        try:
            return await broker.pull(consumer)
        except TransientError as exc:
            failures += 1
            await _back_off(broker, stop, f"binding to consumer {consumer}", failures, exc, stage=stage)
    return None


async def _back_off(
    broker: Broker, stop: asyncio.Event, what: str, failures: int, exc: Exception, *, stage: str
) -> None:
    """After the ``failures``-th failure in a row to reach the consumer: count, log now and then, wait."""
    FETCH_ERRORS.labels(stage).inc()
    if backoff.now_and_then(failures, every=30):
        log.warning("%s failed (%d in a row): %s", what, failures, exc)
    await sleep_or_stop(stop, broker.settings.backoff_delay(failures))


async def _handle(handler: Handler, deliveries: list[Delivery], *, stage: str) -> list[Outcome]:
    started = time.perf_counter()
    try:
        outcomes = list(await handler(deliveries))
    except Exception as exc:
        outcome = classify(exc)
        return [outcome] * len(deliveries)
    finally:
        HANDLE_SECONDS.labels(stage).observe(time.perf_counter() - started)
    if len(outcomes) != len(deliveries):
        log.error(
            "handler returned %d outcomes for %d deliveries; retrying all", len(outcomes), len(deliveries)
        )
        return [Retry("error", detail="outcome count mismatch")] * len(deliveries)
    return outcomes


class _Tally:
    """Counts settled deliveries and logs one summary line at most every 30 s (never one per message)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.counts: dict[str, int] = {}
        self.since = time.monotonic()

    def add(self, done: str) -> None:
        self.counts[done] = self.counts.get(done, 0) + 1

    def maybe_log(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.counts or (not force and now - self.since < _SUMMARY_EVERY_S):
            return
        log.info(
            "%s: settled %s in %.0fs",
            self.stage,
            ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())),
            now - self.since,
            extra={"stage": self.stage, **{f"settled_{k}": n for k, n in self.counts.items()}},
        )
        self.counts, self.since = {}, now
