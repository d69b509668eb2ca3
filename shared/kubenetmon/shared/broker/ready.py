"""Connect to NATS and make sure the topology is there: the one way every command starts its broker.

``connect_ready`` makes one bounded connection attempt, then either ensures the topology (creates or
reconciles the streams and durable consumers; a conflict raises ``ConfigError``, or is only logged for a
caller that can run anyway) or, with ``ensure=False``, only checks that some streams exist: a replay
must never create or reconcile, since its flags may not carry the deployment's retention settings.
``connect_ready_or_stop`` is the services' start: connecting and ensuring the topology are retried
while NATS is unreachable or JetStream cannot answer yet (a cluster electing its meta leader, a member
restarting), until ``stop`` is set; a conflict is not retried.

Whatever fails after the connection was made closes it before the error goes up. This module must not
decide what a caller does with a ``TransientError`` of a single attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kubenetmon.shared import backoff, runtime
from kubenetmon.shared.broker.client import Broker
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings

_log = logging.getLogger(__name__)
_LOG_EVERY_ATTEMPTS = 10


async def connect_ready(
    settings: NatsSettings,
    *,
    name: str,
    wait_s: float,
    ensure: bool = True,
    streams: Sequence[str] = (),
    strict: bool = True,
    log: logging.Logger = _log,
    inbox: str = "",
) -> Broker:
    """Connect within ``wait_s`` (else ``TransientError``), then ensure the topology or check ``streams``.

    ``ensure``: create or reconcile the topology; ``strict``: a conflict raises ``ConfigError``, else it
    is logged on ``log``. Without ``ensure``, only the stream kinds in ``streams`` are checked.
    ``inbox``: see ``Broker.connect``.
    """
    broker = await Broker.connect(settings, name=name, wait_s=wait_s, inbox=inbox)
    return await _prepare(broker, ensure=ensure, streams=streams, strict=strict, log=log)


async def connect_ready_or_stop(
    settings: NatsSettings,
    *,
    name: str,
    stop: asyncio.Event,
    wait_s: float,
    retry_s: float,
    log: logging.Logger = _log,
) -> Broker | None:
    """Connect (attempts of ``wait_s``, ``retry_s`` apart) and ensure the topology until both work or
    ``stop`` is set (None); a conflict raises ``ConfigError``; unavailability is logged now and then."""
    attempt = 0
    while not stop.is_set():
        what = "NATS unavailable"
        try:
            broker = await Broker.connect(settings, name=name, wait_s=wait_s)
            what = "JetStream not ready"
            return await _prepare(broker, ensure=True, streams=(), strict=True, log=log)
        except TransientError as exc:
            attempt += 1
            if backoff.now_and_then(attempt, every=_LOG_EVERY_ATTEMPTS):
                log.warning("%s (attempt %d): %s", what, attempt, exc)
            await runtime.sleep_or_stop(stop, retry_s)
    return None


async def _prepare(
    broker: Broker, *, ensure: bool, streams: Sequence[str], strict: bool, log: logging.Logger
) -> Broker:
    """The topology ensured (or ``streams`` checked) on a fresh connection, closed if that fails."""
    try:
        if ensure:
            report = await broker.ensure_topology()
            if strict:
                report.raise_for_conflicts()
            for change in report.conflicts:  # the reconciler logs what it did; conflicts need a human
                log.warning("JetStream topology conflict: %s", change.line())
        else:
            for kind in streams:
                await broker.stream_info(kind)
    except BaseException:
        await broker.close()
        raise
    return broker
