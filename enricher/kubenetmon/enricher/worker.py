"""One enricher process's handler: RAW deliveries in, ENRICHED messages published, one outcome each.

For each fetched RAW message: decode (a ``DecodeError`` is poison: DLQ), label, split the rows into
ENRICHED messages of at most ``max_rows`` rows, publish them with ids derived from the RAW id (part 0
is ``schema.enriched_msg_id(raw_id)``, part k ``<that>+k``, so a republish after a crash is dropped
by the duplicate window), and only then report ``Ack``. A RAW chunk with a ledger hands it on in part 0
(its ``report``, a row of ``agent_reports``), which is sent even when the chunk has no rows: the ledger
reaches ClickHouse through the same streams as the flows. A publish the broker did not confirm is a
``Retry``; a payload it can never take, or a message the labeler fails on, is ``Poison``.
``consumer.consume`` settles the outcomes (ack, nak with backoff, or DLQ).

It must not settle deliveries itself, read flags, or own connections: the caller passes the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from kubenetmon.enricher import fit, plausible
from kubenetmon.enricher import metrics as m
from kubenetmon.enricher.labeler import Labeler, Labelled, Stats
from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import ACK, STORE_FULL, Outcome, Poison, Retry
from kubenetmon.shared.deliveries import Delivery
from kubenetmon.shared.errors import PoisonError, StoreFullError, TransientError
from kubenetmon.shared.ledger import ReportRow

log = logging.getLogger(__name__)

STAGE: Final = "enricher"


def parts(labelled: Labelled, *, max_rows: int) -> list[Sequence[Sequence[Any]]]:
    """The columns of ``labelled`` cut into row ranges of at most ``max_rows`` rows each."""
    total = labelled.stats.rows
    if total <= max_rows:
        return [labelled.data] if total else []
    return [[col[i : i + max_rows] for col in labelled.data] for i in range(0, total, max_rows)]


def part_id(raw_id: str, part: int, *, replay: str = "") -> str:
    """Id of part ``part`` of the ENRICHED output of RAW ``raw_id`` (a replay run adds its tag)."""
    base = schema.enriched_msg_id(raw_id, replay=replay)
    return base if part == 0 else f"{base}+{part}"


class Enricher:
    """Labels and publishes; ``handle`` is a ``consumer.consume`` handler."""

    def __init__(
        self,
        labeler: Labeler,
        *,
        broker: Broker,
        max_rows: int,
        clock: Callable[[], int] = time.time_ns,
        replay: str = "",
        on_labelled: Callable[[Stats], None] | None = None,
        bounds: plausible.Bounds | None = None,
    ) -> None:
        self.labeler = labeler
        self.broker = broker
        self.max_rows = max_rows
        self.clock = clock
        self.replay = replay
        """Replay run tag (``kubenetmon replay raw``): its ids must not collide with the live ones."""
        self.on_labelled = on_labelled
        self.bounds = bounds
        """What a report may claim (``plausible``); None: not checked (tests of labelling alone)."""
        self._raw_prefix = f"{broker.settings.subject_prefix}.raw." if bounds is not None else ""

    async def handle(self, deliveries: list[Delivery]) -> Sequence[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        pending: list[tuple[int, asyncio.Future[list[Any]]]] = []
        verdicts: dict[int, Poison] = {}
        for i, delivery in enumerate(deliveries):
            try:
                messages = self.enrich(delivery)
            except Rejected as exc:  # its record first (so `check` sees it), then the DLQ
                messages, verdicts[i] = exc.messages, Poison(exc.reason, exc.detail)
            except PoisonError as exc:
                outcomes[i] = Poison(exc.reason, exc.detail)
                continue
            if not messages:
                outcomes[i] = verdicts.get(i, ACK)
                continue
            publishes = [
                self.broker.publish(subject, payload, msg_id=msg_id) for subject, payload, msg_id in messages
            ]
            pending.append((i, asyncio.gather(*publishes, return_exceptions=True)))
        for i, future in pending:
            outcome = _outcome(await future)
            outcomes[i] = verdicts.get(i, outcome) if outcome is ACK else outcome
        if deliveries:
            m.LAG.set(deliveries[-1].pending)
        return [o if o is not None else Retry("error") for o in outcomes]

    def enrich(self, delivery: Delivery) -> list[tuple[str, bytes, str]]:
        """(subject, payload, msg id) of each ENRICHED message for one RAW delivery; raises PoisonError
        (``Rejected`` for an implausible report)."""
        msg = schema.decode_raw(delivery.data, subject=delivery.subject)
        if self.bounds is not None:
            self.check(msg, subject=delivery.subject)
        return self.enrich_message(msg)

    def check(self, msg: schema.RawMessage, *, subject: str) -> None:
        """Raise ``Rejected`` (with its record) if ``msg`` is implausible (``plausible.check``)."""
        assert self.bounds is not None
        node = plausible.subject_node(subject, raw_prefix=self._raw_prefix)
        try:
            plausible.check(msg, bounds=self.bounds, now_s=self.clock() / 1e9, subject_node=node)
        except plausible.Implausible as exc:
            m.REJECTED.labels(exc.reason).inc()
            record = plausible.rejection(msg, exc.reason, bounds=self.bounds, now_s=self.clock() / 1e9)
            messages = [] if record is None else [self._rejection_message(msg, record)]
            raise Rejected(exc.reason, exc.detail, messages=messages) from None

    def _rejection_message(self, msg: schema.RawMessage, record: ReportRow) -> tuple[str, bytes, str]:
        """The ENRICHED message carrying a refused chunk's ``agent_reports`` row (no flows)."""
        message = schema.EnrichedMessage(
            msg.msg_id,
            msg.node,
            self.clock(),
            list(schema.COLUMN_NAMES),
            [[] for _ in schema.COLUMN_NAMES],
            record,
        )
        msg_id = part_id(msg.msg_id, 0, replay=self.replay) + "/rejected"
        return self.broker.enriched_subject(msg.node), schema.encode_enriched(message), msg_id

    def enrich_message(self, msg: schema.RawMessage) -> list[tuple[str, bytes, str]]:
        """(subject, payload, msg id) of each ENRICHED message for one decoded RAW message."""
        started = time.perf_counter()
        enriched_at = self.clock()
        try:
            labelled = self.labeler.label(msg, enriched_at=enriched_at)
        except Exception as exc:  # a labeler bug must not block the stream: this message goes aside
            log.exception("labeling failed for %s", msg.msg_id)
            raise PoisonError("label", repr(exc)) from None
        m.LABEL_SECONDS.observe(time.perf_counter() - started)
        m.add(labelled.stats)
        if self.on_labelled is not None:
            self.on_labelled(labelled.stats)
        subject = self.broker.enriched_subject(msg.node)
        report = report_row(msg)
        chunks = parts(labelled, max_rows=self.max_rows)
        if not chunks and report is not None:
            chunks = [[[] for _ in labelled.columns]]
        out = []
        limit = self.broker.max_payload - fit.HEADROOM
        for k, data in enumerate(chunks):
            message = schema.EnrichedMessage(
                msg.msg_id, msg.node, enriched_at, labelled.columns, data, report=report if k == 0 else None
            )
            payload = schema.encode_enriched(message)
            if len(payload) > limit:  # rare: split it (and cut what alone cannot fit) to the server's bound
                for j, part in enumerate(fit.fitted(message, limit=limit)):
                    out.append(
                        (subject, part, part_id(msg.msg_id, k, replay=self.replay) + (f"~{j}" if j else ""))
                    )
                continue
            out.append((subject, payload, part_id(msg.msg_id, k, replay=self.replay)))
        return out


class Rejected(PoisonError):
    """An implausible report: its ``agent_reports`` record (``messages``: none or one) is published
    before the report goes to the DLQ."""

    def __init__(self, reason: str, detail: str, *, messages: list[tuple[str, bytes, str]]) -> None:
        super().__init__(reason, detail)
        self.messages = messages


def report_row(msg: schema.RawMessage) -> ReportRow | None:
    """The ``agent_reports`` row of a RAW chunk (None for a chunk without a ledger)."""
    if msg.ledger is None:
        return None
    return ReportRow(
        boot=msg.boot,
        start=msg.start,
        seconds=msg.seconds,
        seq=msg.seq,
        chunk=msg.chunk,
        chunks=msg.chunks,
        chunk_rows=len(msg.columns()[0]),
        ledger=msg.ledger,
    )


def _outcome(results: list[Any]) -> Outcome:
    """All parts confirmed: ack; a part the broker can never take: poison; else retry (republish)."""
    for result in results:
        if isinstance(result, PoisonError):
            return Poison(result.reason, result.detail)
    failures = [r for r in results if isinstance(r, BaseException)]
    if not failures:
        m.MESSAGES_OUT.inc(len(results))
        return ACK
    first = failures[0]
    full = next((f for f in failures if isinstance(f, StoreFullError)), None)
    if full is not None:  # held and sent again until ENRICHED has room, never dead-lettered for it
        return Retry(STORE_FULL, detail=str(full))
    if not isinstance(first, TransientError):
        log.error("unexpected publish failure: %r", first)
    return Retry("publish", detail=str(first))
