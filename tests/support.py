"""Helpers shared by the test packages: waiting on a condition, running ``kubenetmon`` subprocesses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.shared.options import format_value

DEADLINE_S = 45.0
KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]


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


def flags(settings: object) -> list[str]:
    """Command-line flags reproducing ``settings`` (the fields that differ from their defaults)."""
    out: list[str] = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if "flag" in f.metadata and value != f.default:
            out += [f.metadata["flag"], format_value(f.metadata["kind"], value)]
    return out


class Process:
    """A subprocess with stdout and stderr in files."""

    def __init__(self, argv: list[str], *, log_path: Path) -> None:
        self.log_path, self.out_path = log_path, log_path.with_suffix(".out")
        self._log, self._out = log_path.open("wb"), self.out_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._log)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines of stderr."""
        out = []
        for line in self.log.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, *, within: float = DEADLINE_S) -> int:
        try:
            code = await asyncio.to_thread(self.proc.wait, within)
        finally:
            self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        self._log.close()
        self._out.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``Process``es; each is killed at the end of the test if still running."""
    procs: list[Process] = []

    def start(*argv: str, name: str = "proc") -> Process:
        proc = Process([*argv], log_path=tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
