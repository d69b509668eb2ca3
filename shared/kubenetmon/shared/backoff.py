"""Retry delays, computed in one place: doubling with a cap, a per-attempt table, jitter, log cadence.

Every retry loop in kubenetmon (fetching, binding, publishing, connecting, inserting, watching,
respawning) counts its failures in a row and asks this module how long to wait and whether to log;
the waiting itself is ``runtime.sleep_or_stop`` (a wait that ends early when the process stops).

Pure functions of their arguments: this module must not sleep, log, or read settings itself, so each
caller keeps its own numbers, log lines and metrics, and the delays are tested without a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def exponential(exponent: int, *, base_s: float, max_s: float, max_exponent: int | None = None) -> float:
    """``base_s * 2**exponent`` seconds (the exponent capped at ``max_exponent`` if given), at most ``max_s``.

    Callers pass their own exponent (failures in a row, or one less), so each keeps its first delay.
    An exponent too large for a float gives ``max_s``, never ``OverflowError``.
    """
    if max_exponent is not None:
        exponent = min(exponent, max_exponent)
    try:
        delay: float = base_s * 2**exponent
    except OverflowError:  # only past 2**1023, long after any cap was reached
        return max_s
    return min(max_s, delay)


def from_table(delays: Sequence[float], attempt: int) -> float:
    """The delay after failed attempt number ``attempt`` (1-based); the last one repeats."""
    return delays[min(max(attempt, 1), len(delays)) - 1]


def at_least(delays: Sequence[float], *, floor_s: float) -> tuple[float, ...]:
    """``delays`` with every entry raised to ``floor_s`` where it is shorter."""
    return tuple(max(floor_s, d) for d in delays)


def jittered(
    delay_s: float, *, spread: float = 0.2, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """``delay_s`` times a random factor within ``1 +- spread`` (clients retrying together drift apart)."""
    return delay_s * uniform(1 - spread, 1 + spread)


def now_and_then(failures: int, *, every: int) -> bool:
    """Whether the ``failures``-th failure in a row is worth a log line: the first and every ``every``-th."""
    return failures == 1 or failures % every == 0
