"""How a replay shows its progress: a bar with rate and ETA on a terminal, log lines otherwise.

Why it exists: a replay of days of history runs for minutes; the operator needs to see how far it is,
and a job's log needs the same facts without terminal control codes. ``Progress`` counts the messages
read against the total the stream announced, per phase (e.g. reading the metadata history, then RAW),
and renders either a rich progress bar on stderr or one INFO line every few seconds. ``summary``
formats the closing report the verbs print on stdout.

It must not count anything but what the verbs tell it; it never reads a stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar
from rich.text import Text

log = logging.getLogger(__name__)

_LOG_EVERY_S: Final = 5.0


class Progress:
    """Messages read out of the expected total, per phase; ``describe()`` adds the verb's counts."""

    def __init__(
        self,
        title: str,
        *,
        tty: bool,
        describe: Callable[[], str] = lambda: "",
        every_s: float = _LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.describe = describe
        self.every_s = every_s
        self.clock = clock
        self.phase_name = ""
        self.total = 0
        self.done = 0
        self.started = clock()
        self._logged = self.started
        self._bar: Bar | None = _bar() if tty else None
        self._task: TaskID | None = None

    def phase(self, name: str) -> None:
        """Start counting a new phase (the previous one is reported as finished)."""
        self._finish_phase()
        self.phase_name, self.total, self.done = name, 0, 0
        self.started = self._logged = self.clock()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(name, total=None, detail="")

    def add_total(self, n: int) -> None:
        self.total += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=self.total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, detail=self.describe())
            return
        now = self.clock()
        if now - self._logged >= self.every_s:
            self._logged = now
            log.info("%s", self.line(now=now))

    def line(self, *, now: float) -> str:
        """``replay raw: 1200/5000 messages (24%), 540 msg/s, ETA 7s; <verb counts>``."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = max(self.total - self.done, 0)
        eta = f", ETA {format_seconds(left / rate)}" if rate > 0 and self.total else ""
        detail = self.describe()
        return (
            f"{self.title} {self.phase_name}: {self.done}/{self.total} messages{share}, "
            f"{rate:,.0f} msg/s{eta}" + (f"; {detail}" if detail else "")
        )

    def close(self) -> None:
        self._finish_phase()
        if self._bar is not None:
            self._bar.stop()

    def _finish_phase(self) -> None:
        if not self.phase_name:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=max(self.total, self.done), completed=self.done)
        else:
            log.info("%s (phase done)", self.line(now=self.clock()))


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "- msg/s", style="progress.data.speed")


def _bar() -> Bar:
    return Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
    )


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def closing_title(
    verb: str,
    *,
    dry_run: bool,
    interrupted: bool,
    seconds: float,
    rerun: str = "rerun the same command to finish",
) -> str:
    """``replay raw (dry run): done in 3.2s`` — the first line of every replay's closing report."""
    state = f"interrupted: {rerun}" if interrupted else "done"
    return f"replay {verb}{' (dry run)' if dry_run else ''}: {state} in {format_seconds(seconds)}"


def summary(title: str, lines: Sequence[tuple[str, str]]) -> str:
    """The closing report: a title, then one aligned ``label  text`` line per fact."""
    width = max((len(label) for label, _ in lines), default=0)
    return "\n".join([title, *(f"  {label.ljust(width)}  {text}" for label, text in lines)])
