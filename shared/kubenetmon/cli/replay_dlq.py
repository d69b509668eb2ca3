"""``kubenetmon replay dlq``: re-drive dead-lettered messages once the cause is fixed.

Each DLQ entry carries where it came from (``Kubenetmon-Original-Subject``, ``-Original-Msg-Id``...)
and why it failed (``Kubenetmon-Reason``, ``Kubenetmon-Stage``). A re-drive publishes the payload, with
the original's own headers, to the original subject, then deletes the entry from the DLQ, so a rerun
(after Ctrl-C, or a second invocation) does not send it again.

The ``Nats-Msg-Id`` of a re-drive is ``<original id>/redrive/<DLQ sequence>``, not the original id:
within the duplicate window the server would silently drop the original id (the message *is* in its
stream, it was just not processed). Re-driving the same entry twice therefore yields the same id (a
crash between publish and delete is deduplicated), and outside the window the row identity makes it
idempotent anyway: the enricher derives ENRICHED ids and flow ids from the RAW content, and ENRICHED
rows carry their flow ids.

An entry is re-driven only back into its stage's source stream, as configured: an ``enricher`` entry to
a RAW subject, a ``writer`` entry to an ENRICHED subject (``SOURCES``), and only if it came from that
stage's own DLQ subject (each role may publish to the DLQ only there). A role's credentials can write
any headers into a DLQ entry, and this verb runs as admin: anything else (another stage, a subject of
another stream, ``$JS.``/``$SYS.`` API subjects, wildcards) is refused, counted and left in the DLQ, with
one line naming the entry and why. No entry, whatever it holds, ends the run with a traceback.

This verb must not decode payloads: it moves bytes, the stages judge them again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff, exits, runtime, topology
from kubenetmon.shared.broker import Broker, Delivery
from kubenetmon.shared.consumer import (
    H_OMITTED_BYTES,
    H_ORIGINAL_MSG_ID,
    H_ORIGINAL_STREAM,
    H_ORIGINAL_SUBJECT,
    H_REASON,
    H_STAGE,
    H_STREAM_SEQ,
)
from kubenetmon.shared.errors import PoisonError, TransientError
from kubenetmon.shared.options import add_arguments, from_args, option
from kubenetmon.shared.replay.progress import Progress, closing_title, summary
from kubenetmon.shared.replay.run import add_run_arguments, connect, exit_code, guarded, setup_logging
from kubenetmon.shared.replay.scan import Range, scan
from kubenetmon.shared.settings import (
    NatsSettings,
    add_log_arguments,
    add_nats_arguments,
    add_runtime_arguments,
    nats_settings,
    runtime_settings,
)
from kubenetmon.shared.units import human_bytes

log = logging.getLogger(__name__)

H_REDRIVEN_FROM: Final = "Kubenetmon-Redriven-From"
"""Set on a re-driven message: ``<DLQ stream>#<sequence>`` of the entry it came from."""
_OWN_PREFIX: Final = "kubenetmon-"
SOURCES: Final = {"enricher": topology.RAW, "writer": topology.ENRICHED}
"""Stage -> the stream kind its consumer reads: the only place an entry of that stage may go back to."""
_RETRY_MAX_S: Final = 5.0


@dataclass(frozen=True)
class Selection:
    reasons: frozenset[str] = frozenset()
    """Only entries dead-lettered for one of these reasons (empty: any)."""
    stages: frozenset[str] = frozenset()
    """Only entries of one of these stages (empty: any)."""

    def matches(self, headers: Mapping[str, str]) -> bool:
        return (not self.reasons or headers.get(H_REASON, "") in self.reasons) and (
            not self.stages or headers.get(H_STAGE, "") in self.stages
        )


@dataclass(frozen=True)
class SelectionFlags:
    """The flags that choose DLQ entries (as typed; ``Selection`` is what they mean)."""

    reasons: tuple[str, ...] = option(
        (),
        flag="--reason",
        kind="append",
        metavar="REASON",
        help="only entries dead-lettered for this reason, e.g. max_deliver, label, invalid_batch "
        "(repeatable, or comma-separated)",
    )
    stages: tuple[str, ...] = option(
        (),
        flag="--stage",
        kind="append",
        metavar="STAGE",
        help="only entries of this stage: enricher, writer, ... (repeatable, or comma-separated)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, SelectionFlags, title="selection")
    add_run_arguments(parser)
    add_nats_arguments(parser, topology=False)
    add_runtime_arguments(parser)
    add_log_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = nats_settings(args)
    flags = from_args(SelectionFlags, args)
    selection = Selection(reasons=frozenset(flags.reasons), stages=frozenset(flags.stages))
    tty = setup_logging(args, process="replay-dlq")
    dry_run = bool(args.dry_run)
    return runtime.run(
        guarded("dlq", lambda stop: redrive(settings, selection, dry_run=dry_run, stop=stop, tty=tty)),
        drain_timeout_s=runtime_settings(args).drain_timeout_s,
    )


async def redrive(
    settings: NatsSettings, selection: Selection, *, dry_run: bool, stop: asyncio.Event, tty: bool
) -> int:
    """Re-drive every selected DLQ entry; print the summary; return the exit code."""
    started = time.monotonic()
    try:
        broker = await connect(settings, name="kubenetmon-replay-dlq", streams=(topology.DLQ,))
    except TransientError as exc:
        print(f"kubenetmon replay dlq: {exc}", file=sys.stderr)
        return exits.FAILED
    tally: Counter[str] = Counter()
    progress = Progress("replay dlq", tty=tty, describe=lambda: _brief(tally, dry_run=dry_run))
    stage = next(iter(selection.stages)) if len(selection.stages) == 1 else None
    rng = Range(topology.DLQ, filter_subject=broker.dlq_subject(stage) if stage else None)
    try:
        progress.phase("entries")
        async for batch in scan(broker, rng, stop=stop, on_total=progress.add_total):
            for delivery in batch:
                if not stop.is_set():
                    try:
                        await _one(broker, delivery, selection, tally, dry_run=dry_run, stop=stop)
                    except Exception as exc:  # one entry must never end the run (nor print a traceback)
                        tally["failed"] += 1
                        log.error(
                            "DLQ entry #%d could not be re-driven: %r; left in place",
                            delivery.stream_seq,
                            exc,
                        )
            progress.advance(len(batch))
    finally:
        progress.close()
        await broker.drain()
    interrupted = stop.is_set()
    print(_report(tally, dry_run=dry_run, interrupted=interrupted, seconds=time.monotonic() - started))
    return exit_code(
        interrupted=interrupted, failed=tally["failed"] + tally["not removed"] + tally["refused"]
    )


async def _one(
    broker: Broker,
    entry: Delivery,
    selection: Selection,
    tally: Counter[str],
    *,
    dry_run: bool,
    stop: asyncio.Event,
) -> None:
    tally["read"] += 1
    headers = entry.headers
    if not selection.matches(headers):
        tally["not selected"] += 1
        return
    subject = headers.get(H_ORIGINAL_SUBJECT, "")
    if not subject:
        tally["no origin"] += 1
        log.warning("DLQ entry #%d names no original subject; left in place", entry.stream_seq)
        return
    refusal = refused(broker.settings, entry.subject, headers.get(H_STAGE, ""), subject)
    if refusal:
        tally["refused"] += 1
        log.error("DLQ entry #%d refused: %s; left in place", entry.stream_seq, refusal)
        return
    if H_OMITTED_BYTES in headers:
        # The verdict was stored without its body (too large to publish with the DLQ headers): there is
        # nothing here to re-drive; the original stays in its own stream at the recorded sequence.
        tally["body omitted"] += 1
        log.warning(
            "DLQ entry #%d has no body (%s bytes omitted; original in %s at seq %s); left in place",
            entry.stream_seq,
            headers[H_OMITTED_BYTES],
            headers.get(H_ORIGINAL_STREAM, "?"),
            headers.get(H_STREAM_SEQ, "?"),
        )
        return
    tally["selected"] += 1
    tally["bytes"] += len(entry.data)
    if dry_run:
        return
    original = headers.get(H_ORIGINAL_MSG_ID, "")
    msg_id = (
        f"{original}/redrive/{entry.stream_seq}" if original else f"redrive/{entry.stream}/{entry.stream_seq}"
    )
    own = {k: v for k, v in headers.items() if not k.lower().startswith((_OWN_PREFIX, "nats-"))}
    own[H_REDRIVEN_FROM] = f"{entry.stream}#{entry.stream_seq}"
    try:
        result = await _publish(broker, subject, entry.data, msg_id=msg_id, headers=own, stop=stop)
    except PoisonError as exc:
        tally["failed"] += 1
        log.error("DLQ entry #%d cannot be re-driven to %s: %s", entry.stream_seq, subject, exc)
        return
    if result is None:
        return  # stopped before it was sent: a rerun sends it
    tally["duplicate" if result else "redriven"] += 1
    try:
        await broker.delete_message(topology.DLQ, entry.stream_seq)
    except TransientError as exc:
        tally["not removed"] += 1
        log.warning(
            "re-driven DLQ entry #%d was not removed (a rerun re-drives it): %s", entry.stream_seq, exc
        )


def refused(settings: NatsSettings, dlq_subject: str, stage: str, subject: str) -> str:
    """Why an entry of ``stage`` stored under ``dlq_subject`` must not go back to ``subject`` ('': it may)."""
    kind = SOURCES.get(stage)
    if kind is None:
        return f"stage {_shown(stage)} has no source stream to re-drive to (known: {', '.join(SOURCES)})"
    if dlq_subject != topology.dlq_subject(settings, stage):
        return f"an entry of stage {stage} stored under {_shown(dlq_subject)}, not that stage's DLQ subject"
    prefix = f"{settings.subject_prefix}.{kind}."
    tokens = subject.removeprefix(prefix).split(".")
    if not subject.startswith(prefix) or not all(tokens) or any(_wild(t) for t in tokens):
        return f"original subject {_shown(subject)} is not a {kind.upper()} subject ({prefix}<node>)"
    return ""


def _wild(token: str) -> bool:
    return token in ("*", ">") or any(ch.isspace() or not ch.isprintable() for ch in token)


def _shown(text: str) -> str:
    """A header value in a log line: quoted, escaped, bounded."""
    return repr(text[:120])


async def _publish(
    broker: Broker, subject: str, data: bytes, *, msg_id: str, headers: dict[str, str], stop: asyncio.Event
) -> bool | None:
    """Publish, retrying while NATS is unavailable: True if it was a duplicate, None if stopped first."""
    failures = 0
    while not stop.is_set():
        try:
            return (await broker.publish(subject, data, msg_id=msg_id, headers=headers)).duplicate
        except TransientError as exc:
            failures += 1
            if backoff.now_and_then(failures, every=10):
                log.warning("re-drive to %s failed (%d in a row), retrying: %s", subject, failures, exc)
            await runtime.sleep_or_stop(stop, backoff.exponential(failures, base_s=0.2, max_s=_RETRY_MAX_S))
    return None


def _brief(tally: Counter[str], *, dry_run: bool) -> str:
    done = tally["selected"] if dry_run else tally["redriven"] + tally["duplicate"]
    return f"{done} {'to re-drive' if dry_run else 're-driven'}, {tally['not selected']} not selected"


def _report(tally: Counter[str], *, dry_run: bool, interrupted: bool, seconds: float) -> str:
    lines = [("read", f"{tally['read']} DLQ entries")]
    selected = f"{tally['selected']} entries, {human_bytes(tally['bytes'], grouped=True)}"
    if dry_run:
        lines.append(("would re-drive", selected))
    else:
        lines += [
            ("selected", selected),
            (
                "re-driven",
                f"{tally['redriven']} (+{tally['duplicate']} already re-driven), removed from the DLQ",
            ),
        ]
    lines.append(
        (
            "left in the DLQ",
            f"{tally['not selected']} not selected, {tally['no origin']} without origin, "
            f"{tally['body omitted']} without body, {tally['refused']} refused (not their stage's "
            "source stream)",
        )
    )
    if tally["failed"] or tally["not removed"]:
        lines.append(
            ("failed", f"{tally['failed']} refused, {tally['not removed']} re-driven but not removed")
        )
    title = closing_title("dlq", dry_run=dry_run, interrupted=interrupted, seconds=seconds)
    return summary(title, lines)
