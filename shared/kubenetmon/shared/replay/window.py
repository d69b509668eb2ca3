"""The time window of a replay, and where in a stream to look for it.

Why it exists: every replay verb selects records the same way. A RAW (or ENRICHED) record belongs to
the window iff its *interval start* is in ``[from, to)``: interval boundaries are exact, whatever the
time the message was published. Reading starts at stream time ``from - lead``: a record for an
interval is published after the interval started (after it ended, in fact), so nothing of the window
is stored earlier than ``from``, except by the clock skew between a node and the NATS server, which
``lead`` covers. Reading stops at the stream's last sequence when the replay starts (a backlog that
arrives late is still read), or earlier at stream time ``to + max_lateness`` when one is given.

It must not talk to the broker or read the clock: callers pass ``now``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import add_arguments, option
from kubenetmon.shared.timespec import format_time, parse_duration, parse_time

DEFAULT_LEAD: Final = "5m"


@dataclass(frozen=True)
class Window:
    """Interval starts in ``[start, end)``, Unix seconds; how far before and after to read the stream."""

    start: float
    end: float
    lead_s: float = 300.0
    """Seconds of stream time read before ``start`` (clock skew between nodes and the NATS server)."""
    max_lateness_s: float = 0.0
    """Stop reading at stream time ``end`` + this many seconds; 0: read to the stream's end."""

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConfigError(
                f"--to ({format_time(self.end)}) must be after --from ({format_time(self.start)})"
            )
        if self.lead_s < 0 or self.max_lateness_s < 0:
            raise ConfigError("--lead and --max-lateness must not be negative")

    def __contains__(self, interval_start: float) -> bool:
        return self.start <= interval_start < self.end

    @property
    def read_from(self) -> float:
        """Stream time to start reading at."""
        return self.start - self.lead_s

    @property
    def read_until(self) -> float | None:
        """Stream time after which nothing is read any more (None: up to the last message)."""
        return self.end + self.max_lateness_s if self.max_lateness_s > 0 else None

    def describe(self) -> str:
        return f"{format_time(self.start)} .. {format_time(self.end)}"


@dataclass(frozen=True)
class WindowFlags:
    """The window flags as typed: times and durations, read into a ``Window`` by ``window_from``."""

    start: str | None = option(
        None,
        flag="--from",
        dest="window_from",
        native=True,
        required=True,
        metavar="TIME",
        help="first interval start replayed: RFC 3339 (2026-11-26T05:00:00Z), -2h, now, or Unix seconds",
    )
    end: str = option(
        "now",
        flag="--to",
        dest="window_to",
        native=True,
        metavar="TIME",
        help="end of the window (exclusive): intervals starting at or after it are not replayed",
    )
    lead: str = option(
        DEFAULT_LEAD,
        flag="--lead",
        dest="window_lead",
        native=True,
        metavar="DURATION",
        help="read the stream from this long before --from (clock skew between nodes and NATS)",
    )
    max_lateness: str = option(
        "0",
        flag="--max-lateness",
        dest="window_max_lateness",
        native=True,
        metavar="DURATION",
        help="stop reading at messages stored this long after --to (0: read to the stream's end, "
        "so a late backlog is never missed)",
    )


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, WindowFlags, title="window")


def window_from(args: argparse.Namespace, *, now: float) -> Window:
    """The window of the parsed flags; relative times count back from ``now``."""
    lead = _duration_or_zero(args.window_lead, flag="--lead")
    lateness = _duration_or_zero(args.window_max_lateness, flag="--max-lateness")
    return Window(
        start=parse_time(args.window_from, now=now),
        end=parse_time(args.window_to, now=now),
        lead_s=lead,
        max_lateness_s=lateness,
    )


def _duration_or_zero(text: str, *, flag: str) -> float:
    if text.strip() in ("0", "0s", ""):
        return 0.0
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
