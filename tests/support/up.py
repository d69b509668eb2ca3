"""Running ``kubenetmon up`` (and the commands users run beside it) as real processes, for the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.support.commands import KUBENETMON, clean_env, kubenetmon
from tests.support.processes import alive, descendants
from tests.support.waiting import wait_until

__all__ = ["Up", "alive", "descendants", "kubenetmon", "sql"]


def sql(data_dir: Path, query: str) -> list[dict[str, Any]]:
    done = kubenetmon("sql", "--data-dir", str(data_dir), "--format", "json", query)
    if done.returncode != 0:
        raise RuntimeError(f"kubenetmon sql failed ({done.returncode}): {done.stderr}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


class Up:
    """``kubenetmon up ARGS`` with stdout/stderr collected (not a terminal: one line per interval)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*KUBENETMON, "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
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
