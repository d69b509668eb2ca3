"""The process edge: the uvloop event loop, signals, graceful drain with a deadline, named root tasks.

``run(main, drain_timeout_s=...)`` runs ``main(stop)`` on uvloop. The first SIGTERM or SIGINT only sets
``stop`` (handlers flip state, nothing else); ``main`` then has ``drain_timeout_s`` to finish in-flight
work and return its exit code, after which it is cancelled and the process exits 1. A second signal
exits at once with 128 + the signal number. A ``ConfigError`` out of ``main`` is raised again by
``run``: retrying cannot fix a configuration, so it is never just logged as a crash.

``RootTasks`` runs a process's long-lived tasks under names: if one fails, or ends while the process is
not stopping, the failure is logged at once and ``stop`` is set so every other task winds down too.

Library code must not create event loops or install signal handlers: only this module does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Final, Self

import uvloop

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError

log = logging.getLogger(__name__)

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

Main = Callable[[asyncio.Event], Awaitable[int]]


def run(main: Main, *, drain_timeout_s: float) -> int:
    """Run ``main(stop)`` on uvloop until it returns; returns the process exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_supervise(main, drain_timeout_s=drain_timeout_s))


async def _supervise(main: Main, *, drain_timeout_s: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = _Signals(stop)
    for sig in SIGNALS:
        loop.add_signal_handler(sig, signals.received, sig)
    # A pool worker starts with these signals blocked (see ``pool``); now that handlers exist, let
    # them in, including one that arrived early.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    task = asyncio.ensure_future(main(stop))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=drain_timeout_s)
            if not done:
                log.error("drain did not finish within %.1fs; cancelling", drain_timeout_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return exits.FAILED
        return _exit_code(task)
    finally:
        stopping.cancel()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def _exit_code(task: asyncio.Future[int]) -> int:
    if task.cancelled():
        return exits.FAILED
    exc = task.exception()
    if isinstance(exc, ConfigError):
        raise exc  # the caller says it in one line (the CLI), or stops without respawning (a pool)
    if exc is not None:
        log.error("main failed: %r", exc, exc_info=exc)
        return exits.FAILED
    return int(task.result() or 0)


class _Signals:
    """First signal: set ``stop``. Second: exit now, skipping cleanup (the operator insisted)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def received(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            log.warning("second %s: exiting now", sig.name)
            logging.shutdown()
            os._exit(128 + int(sig))
        log.info("%s received: draining", sig.name)
        self.stop.set()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set, whichever is first; True if stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def wait_any(*events: asyncio.Event, within: float | None = None) -> None:
    """Wait until one of ``events`` is set (or ``within`` seconds passed)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class RootTasks:
    """Named long-lived tasks of one process; any failure stops them all and is logged at once.

    ::

        async with RootTasks(stop) as tasks:
            tasks.start("watch", index.watch(stop))
            tasks.start("consume", consume(...))
        return tasks.exit_code
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.failed: list[str] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, name: str, coro: Coroutine[Any, Any, Any], *, critical: bool = True) -> asyncio.Task[Any]:
        """Run ``coro``; if ``critical``, its ending before ``stop`` counts as a failure too."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(lambda t: self._done(t, critical=critical))
        self._tasks.append(task)
        return task

    def _done(self, task: asyncio.Task[Any], *, critical: bool) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
        elif critical and not self.stop.is_set():
            log.error("task %s ended while the process was not stopping", task.get_name())
        else:
            return
        self.failed.append(task.get_name())
        self.stop.set()

    @property
    def exit_code(self) -> int:
        return exits.FAILED if self.failed else exits.DONE

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.stop.set()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:  # the drain deadline passed: cancel what is left, then go
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
