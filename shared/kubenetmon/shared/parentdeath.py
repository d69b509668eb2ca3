"""A child process that dies with its parent: SIGTERM on the parent's death (Linux ``PR_SET_PDEATHSIG``).

Used by the worker pool (each worker, at its start) and by ``kubenetmon up`` (each child, between fork and
exec), so a supervisor killed with SIGKILL leaves no orphan metering on its own. The hook is built before
the fork: the child only makes system calls and compares two integers. It must not log or allocate much.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from typing import Any, Final

from kubenetmon.shared import exits

_PR_SET_PDEATHSIG: Final = 1


def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: a parent killed with SIGKILL leaves its children to the container runtime


def die_with(parent: int) -> Callable[[], None]:
    """A function for the child: SIGTERM it when ``parent`` dies, exit it now if ``parent`` already has."""
    prctl = _prctl()

    def arm() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(exits.FAILED)

    return arm
