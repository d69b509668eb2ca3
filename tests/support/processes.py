"""Child processes as the tests run them: ``Process`` (a command with its stdout and stderr in files, its
JSON log records, a signal, a wait) and the process tree read from ``/proc`` (children, descendants, and
whether a remembered (pid, start time) is still the same live process), so a teardown kills stragglers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Protocol

from tests.support.waiting import DEADLINE_S


class Process:
    """A subprocess with stdout and stderr in files."""

    def __init__(self, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path, self.out_path = log_path, log_path.with_suffix(".out")
        self._log, self._out = log_path.open("wb"), self.out_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._log, env=env)

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


def stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := stat(int(entry))) is not None and st[0] == pid:
            found.append(int(entry))
    return sorted(found)


def descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``root``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append((int(entry), st[1]))
    found, todo = set(), [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def alive(procs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``procs`` (pid, start time) that are still the same live process."""
    return {(pid, start) for pid, start in procs if (st := stat(pid)) is not None and st[1] == start}


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Logs(Protocol):
    def records(self) -> list[dict[str, Any]]: ...


def http_port(proc: Logs) -> int | None:
    """The port a role serves ``/metrics`` (and its probes) on, once its log says so."""
    for record in proc.records():
        if str(record.get("msg", "")).startswith("serving /metrics"):
            return int(record["port"])
    return None
