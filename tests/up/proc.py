"""Running ``kubenetmon up`` (and the commands users run beside it) as real processes, for the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.fixtures.lab_kernel import wait_until

KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]


def kubenetmon(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBENETMON_")}
    return subprocess.run([*KUBENETMON, *args], capture_output=True, text=True, timeout=timeout, env=env)


def sql(data_dir: Path, query: str) -> list[dict[str, Any]]:
    done = kubenetmon("sql", "--data-dir", str(data_dir), "--format", "json", query)
    if done.returncode != 0:
        raise RuntimeError(f"kubenetmon sql failed ({done.returncode}): {done.stderr}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``root``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents.setdefault(st[0], []).append((int(entry), st[1]))
    found, todo = set(), [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def alive(procs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(pid, start) for pid, start in procs if (st := _stat(pid)) is not None and st[1] == start}


class Up:
    """``kubenetmon up ARGS`` with stdout/stderr collected (not a terminal: one line per interval)."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBENETMON_")}
        self.proc = subprocess.Popen(
            [*KUBENETMON, "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.seen: set[tuple[int, int]] = set()
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.out) + "\nstderr:\n" + "\n".join(self.err)

    def wait_for_line(self, text: str, *, timeout: float = 60) -> str:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited ({self.proc.returncode}) before {text!r}\n{self.output}")
            return any(text in line for line in self.out + self.err)

        wait_until(seen, timeout=timeout, what=f"{text!r} from kubenetmon up")
        return next(line for line in self.out + self.err if text in line)

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 120) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def processes(self) -> set[tuple[int, int]]:
        """Its live descendants now (remembered, so a teardown finds them even once orphaned)."""
        now = descendants(self.proc.pid)
        self.seen |= now
        return now

    def kill_all(self) -> None:
        """Teardown: nothing of this run may outlive the test, whatever happened."""
        for pid, _ in alive(self.seen | descendants(self.proc.pid)):
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
