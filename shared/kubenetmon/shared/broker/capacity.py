"""A full JetStream store, recognised and reported once: which streams refuse new messages right now.

Every stream has a ``max_bytes`` and the ``new`` discard policy (``topology``): when it is full the
server refuses a publish with "maximum bytes exceeded" (or, when the server's own store limit
``max_file_store`` is reached first, "insufficient resources") instead of deleting the oldest messages,
which may not have been consumed yet. ``Capacity`` turns such a refusal into ``StoreFullError``, sets the
``kubenetmon_nats_store_full{stream}`` gauge, logs one line when a stream starts refusing and one when it
takes a message again (at most once a minute: a stream at the edge of its limit flaps), and tells
listeners (readiness) about both transitions.

What a filesystem that fills up under the server does is different, and is not seen here: nats-server
2.15 marks the stream's store with a sticky write error ("no space left on device") and no longer
answers publishes to it (the client sees timeouts) until the server restarts, even after space was
freed. The stream limits are what keep the store from getting there: they are reserved against the
server's ``max_file_store`` and a topology that does not fit is refused when it is created.

This module must not decide what a caller does with a refused message: it only names the condition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import nats.js.errors

from kubenetmon.shared import metrics
from kubenetmon.shared.errors import StoreFullError

log = logging.getLogger(__name__)

_STORE_FAILED: Final = 10077
"""JetStream's "stream store failed" (the description says why: the limits below are the full ones)."""
_INSUFFICIENT_RESOURCES: Final = 10023
"""The server's own store limit (``max_file_store``/``max_memory_store``) was reached."""
_FULL_REASONS: Final = ("maximum bytes exceeded", "maximum messages exceeded", "insufficient resources")

STORE_FULL = metrics.gauge(
    "nats_store_full",
    "1 while the stream refuses new messages because its store is full (max bytes or the server's store)",
    ["stream"],
    mode="livemax",
)
STORE_FULL_REFUSALS = metrics.counter(
    "nats_store_full_refusals_total",
    "Publishes the server refused because the stream's store was full",
    ["stream"],
)

LOG_EVERY_S: Final = 60.0
Listener = Callable[[bool], None]
"""Called with True when some stream starts refusing, False when none refuses any more."""


def is_store_full(exc: BaseException) -> bool:
    """True if ``exc`` is the server refusing a publish because the stream (or its store) is full."""
    if not isinstance(exc, nats.js.errors.APIError):
        return False
    description = (exc.description or "").lower()
    full = any(reason in description for reason in _FULL_REASONS)
    return exc.err_code in (_STORE_FAILED, _INSUFFICIENT_RESOURCES) and full


class Capacity:
    """Which of one connection's streams refuse new messages; listeners hear the transitions."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.full: dict[str, str] = {}
        """Stream kind -> the server's reason, for each stream refusing right now."""
        self._listeners: list[Listener] = []
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._announced: dict[str, bool] = {}

    def listen(self, listener: Listener) -> None:
        """Call ``listener(True/False)`` whenever the store-full state of the whole connection changes."""
        self._listeners.append(listener)
        if self.full:
            listener(True)

    def refused(self, kind: str, exc: nats.js.errors.APIError, *, subject: str) -> StoreFullError:
        """Record a refusal of stream ``kind``; the error to raise."""
        reason = exc.description or "store full"
        STORE_FULL_REFUSALS.labels(kind).inc()
        if kind not in self.full:
            self._announce(kind, reason)
            STORE_FULL.labels(kind).set(1)
            self.full[kind] = reason
            if len(self.full) == 1:
                self._tell(True)
        return StoreFullError(kind, f"publish to {subject} refused: store full ({reason})")

    def accepted(self, kind: str) -> None:
        """A publish to stream ``kind`` was stored: it has room again."""
        if kind not in self.full:
            return
        del self.full[kind]
        STORE_FULL.labels(kind).set(0)
        if self._announced.pop(kind, False):
            log.info("stream %s takes new messages again", kind.upper(), extra={"stream": kind})
        if not self.full:
            self._tell(False)

    def _announce(self, kind: str, reason: str) -> None:
        """One line when a stream starts refusing, at most every ``LOG_EVERY_S`` (a stream at the edge of
        its limit refuses one publish and takes the next; the gauge and readiness follow each change)."""
        now = self._clock()
        if now - self._logged_at.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._logged_at[kind], self._announced[kind] = now, True
        log.error(
            "store full: stream %s refuses new messages (%s); they are kept and sent again until it has room "
            "(the consumers draining it, its messages ageing out, or a larger limit)",
            kind.upper(),
            reason,
            extra={"stream": kind, "reason": reason},
        )

    def _tell(self, full: bool) -> None:
        for listener in self._listeners:
            listener(full)
