"""Waiting on a condition with a deadline, never a sleep as synchronisation: ``eventually`` in async tests,
``wait_until`` (the lab's own, product code) in blocking ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from kubenetmon.cli.lab.kernel import wait_until

__all__ = ["DEADLINE_S", "eventually", "wait_until"]

DEADLINE_S = 45.0


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, within: float = DEADLINE_S
) -> None:
    """Wait until ``check()`` is true (polling a condition), failing at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {getattr(check, '__name__', check)}")
        await asyncio.sleep(0.05)
