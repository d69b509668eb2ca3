"""Processes for the runtime tests: ``python -m tests.shared.runtime_targets MODE``.

Each prints ``ready`` once its signal handlers are in place (the test waits for that line before it
sends a signal), and reports what it did on stdout.
"""

from __future__ import annotations

import asyncio
import sys

from kubenetmon.shared import logs, runtime
from kubenetmon.shared.settings import LogSettings


def say(text: str) -> None:
    print(text, flush=True)


async def drains(stop: asyncio.Event) -> int:
    say("ready")
    await stop.wait()
    say("drained")
    return 0


async def stuck(stop: asyncio.Event) -> int:
    say("ready")
    await stop.wait()
    say("draining forever")
    try:
        await asyncio.Event().wait()
    finally:
        say("cancelled")
    return 0


async def failing_task(stop: asyncio.Event) -> int:
    async def bad() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    async def good() -> None:
        await stop.wait()
        say("good task stopped")

    async with runtime.RootTasks(stop) as tasks:
        tasks.start("good", good())
        tasks.start("bad", bad())
    say(f"failed: {tasks.failed}")
    return tasks.exit_code


async def task_ends_early(stop: asyncio.Event) -> int:
    async def quits() -> None:
        return None

    async with runtime.RootTasks(stop) as tasks:
        tasks.start("quits", quits())
        tasks.start("waits", stop.wait())
    say(f"failed: {tasks.failed}")
    return tasks.exit_code


async def returns_code(stop: asyncio.Event) -> int:
    return 7


MODES = {f.__name__: f for f in (drains, stuck, failing_task, task_ends_early, returns_code)}

if __name__ == "__main__":
    logs.setup(LogSettings(format="json"))
    sys.exit(
        runtime.run(MODES[sys.argv[1]], drain_timeout_s=float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
    )
