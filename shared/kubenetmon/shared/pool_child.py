"""What runs first inside a pool worker process, before the worker's own code.

It detaches the child from the terminal's process group, asks the kernel for SIGTERM if the supervisor
dies, sets up logging under the worker's name, resolves the target, and calls it with the settings and a
``Ready`` handle. SIGTERM/SIGINT stay blocked (inherited from the supervisor's spawn) until the target's
``runtime.run`` has installed its handlers.

This module must stay light: a worker imports it before anything else, and it knows no service.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import Any, Final

from kubenetmon.shared import exits, logs
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.parentdeath import die_with
from kubenetmon.shared.settings import LogSettings

log = logging.getLogger(__name__)

EXIT_CONFIG: Final = exits.USAGE
"""A worker's exit code for a ``ConfigError``: the supervisor stops the pool instead of respawning."""


class Ready:
    """A worker's readiness flag in memory shared with the supervisor; ``ready()`` / ``ready(False)``."""

    def __init__(self, flags: Any, index: int, name: str) -> None:
        self._flags = flags
        self.index = index
        """This worker's slot, 0 .. workers-1 (stable across respawns)."""
        self.name = name
        """``<pool>-<index>``, for logs and NATS connection names."""
        self._ok = False
        self._holds: set[str] = set()

    def __call__(self, ok: bool = True) -> None:
        self._ok = ok
        self._publish()

    def hold(self, reason: str, held: bool = True) -> None:
        """Not ready while ``reason`` holds (a full store), whatever ``ready()`` said; ``held=False``
        lifts it."""
        if held:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        self._publish()

    def _publish(self) -> None:
        ok = self._ok and not self._holds
        if bool(self._flags[self.index]) != ok:
            why = f" ({', '.join(sorted(self._holds))})" if self._ok and self._holds else ""
            log.info("worker %s %s%s", self.name, "ready" if ok else "not ready", why)
        self._flags[self.index] = 1 if ok else 0


def child_main(
    target: str, settings: object, index: int, flags: Any, log_settings: LogSettings, pool: str, parent: int
) -> None:
    """Entry point of a spawned worker (``multiprocessing`` calls it; its exit code is the target's)."""
    name = f"{pool}-{index}"
    os.setpgid(0, 0)
    die_with(parent)()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards one SIGTERM instead
    logs.setup(log_settings, process=name)
    module, _, attr = target.partition(":")
    try:
        work = getattr(importlib.import_module(module), attr)
        code = int(work(settings, Ready(flags, index, name)) or 0)
    except BaseException as exc:  # the supervisor only sees the exit code: say why here
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, ConfigError):
            log.critical("worker %s: %s", name, exc)
            code = EXIT_CONFIG
        else:
            log.critical("worker %s failed: %r", name, exc, exc_info=exc)
            code = exits.FAILED
    logging.shutdown()
    sys.exit(code)
