"""Small worker targets for the supervisor tests, and a ``__main__`` that runs a supervisor over them.

Each worker records itself in ``workdir`` (``pid-<index>-<pid>``) so a test can find and kill it, and
``drained-<index>-<pid>`` once it has drained after SIGTERM.

    python -m tests.shared.pool_targets MODE WORKDIR PORT WORKERS MAX_CRASHES
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kubenetmon.shared import logs, metrics, runtime
from kubenetmon.shared.pool import Ready, supervise
from kubenetmon.shared.settings import HttpSettings, LogSettings, PoolSettings, RuntimeSettings


@dataclass(frozen=True)
class Settings:
    workdir: str


def _record(settings: Settings, ready: Ready, what: str) -> None:
    (Path(settings.workdir) / f"{what}-{ready.index}-{os.getpid()}").touch()


def steady(settings: Settings, ready: Ready) -> int:
    """Ready at once; on SIGTERM, record the drain and exit 0."""
    started = metrics.counter("test_workers_started_total", "workers started")

    async def main(stop: asyncio.Event) -> int:
        _record(settings, ready, "pid")
        started.inc()
        ready()
        await stop.wait()
        _record(settings, ready, "drained")
        return 0

    return runtime.run(main, drain_timeout_s=5.0)


def gated(settings: Settings, ready: Ready) -> int:
    """Ready only once ``workdir/go-<index>`` exists (the test decides when)."""

    async def main(stop: asyncio.Event) -> int:
        _record(settings, ready, "pid")
        gate = Path(settings.workdir) / f"go-{ready.index}"
        while not gate.exists():
            if await runtime.sleep_or_stop(stop, 0.02):
                return 0
        ready()
        await stop.wait()
        return 0

    return runtime.run(main, drain_timeout_s=5.0)


def stubborn(settings: Settings, ready: Ready) -> int:
    """Ready at once; on SIGTERM, records that it is draining and then never finishes."""

    async def main(stop: asyncio.Event) -> int:
        _record(settings, ready, "pid")
        ready()
        await stop.wait()
        _record(settings, ready, "draining")
        await asyncio.Event().wait()
        return 0

    return runtime.run(main, drain_timeout_s=600.0)


def crashing(settings: Settings, ready: Ready) -> int:
    """Dies at once, every time."""
    _record(settings, ready, "pid")
    return 3


if __name__ == "__main__":
    mode, workdir, port, workers, max_crashes = sys.argv[1:6]
    log_settings = LogSettings(format="text")
    logs.setup(log_settings, process="supervisor")
    sys.exit(
        supervise(
            f"tests.shared.pool_targets:{mode}",
            settings=Settings(workdir),
            pool=PoolSettings(
                workers=int(workers),
                max_crashes=int(max_crashes),
                respawn_backoff_s=0.05,
                respawn_backoff_max_s=0.2,
            ),
            runtime=RuntimeSettings(drain_timeout_s=5.0),
            http=HttpSettings(host="127.0.0.1", port=int(port)),
            logs=log_settings,
            name="test",
        )
    )
