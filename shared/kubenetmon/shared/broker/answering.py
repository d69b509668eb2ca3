"""Answering core NATS requests (not JetStream): what the auth callout service does for nats-server.

A subscription in a queue group hands each request to a task (at most ``limit`` at once), so one slow
answer does not hold up the others. A handler that raises is logged and its request left unanswered:
the requester times out, as it would if the service were down. This module must not know what the
requests mean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from kubenetmon.shared.broker.connection import CLIENT_ERRORS, describe
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[bytes | None]]


async def serve(
    nc: Client, settings: NatsSettings, subject: str, handler: Handler, *, queue: str, limit: int
) -> Callable[[], Awaitable[None]]:
    """Subscribe; returns a coroutine function that unsubscribes and waits for the answers in flight."""
    gate = asyncio.Semaphore(limit)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(msg: Msg) -> None:
        async with gate:
            try:
                reply = await handler(msg.data)
            except Exception:
                log.exception("request handler failed", extra={"subject": subject})
                return
            if reply is not None and msg.reply:
                try:
                    await msg.respond(reply)
                except CLIENT_ERRORS as exc:
                    log.warning("cannot answer a request: %s", describe(exc))

    async def on_message(msg: Msg) -> None:
        task = asyncio.ensure_future(answer(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        sub = await nc.subscribe(subject, queue=queue, cb=on_message)
        await nc.flush(timeout=max(1, int(settings.connect_timeout_s)))
    except CLIENT_ERRORS as exc:
        raise TransientError(f"cannot subscribe to {subject}: {describe(exc)}") from exc

    async def stop() -> None:
        try:
            await sub.unsubscribe()
        except CLIENT_ERRORS as exc:
            log.debug("unsubscribe failed: %s", describe(exc))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    return stop
