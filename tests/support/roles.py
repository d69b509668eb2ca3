"""The pipeline's roles as real processes: start, signal, kill, restart, and find their pool workers.

Each role (an agent, the enricher, the writer) is one ``kubenetmon`` command line run as a child of the
test, with its output appended to a log file that survives restarts (printed when a test fails). Pool
roles spawn worker processes; ``workers()`` finds them under the supervisor, so a test can SIGKILL one
and let the pool respawn it. Every process ever seen is remembered, so teardown kills stragglers even
when a supervisor died first. The environment is scrubbed of ``KUBENETMON_*`` so only the flags count.

This module knows nothing of the pipeline's topology: the harness builds the command lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.commands import clean_env
from tests.support.processes import children, cmdline, stat
from tests.support.waiting import wait_until

__all__ = ["Role", "children"]

_SPAWNED_WORKER = "spawn_main"


class Role:
    """One role's command, run (and re-run) as a child process."""

    def __init__(self, name: str, argv: list[str], *, log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[tuple[int, int]] = set()
        self.starts = 0
        self._terminated = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} never started"
        return self.proc.pid

    def start(self) -> Role:
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        self.starts += 1
        self._remember(self.proc.pid)
        return self

    def workers(self) -> list[int]:
        """Pids of the pool's worker processes (spawned children of the supervisor)."""
        found = [pid for pid in children(self.pid) if _SPAWNED_WORKER in cmdline(pid)]
        for pid in found:
            self._remember(pid)
        return found

    def wait_workers(self, count: int, *, exclude: tuple[int, ...] = (), timeout: float = 60) -> list[int]:
        """Wait until ``count`` workers run, none of them in ``exclude``; return their pids."""
        found: list[int] = []

        def ready() -> bool:
            self.check_alive()
            found[:] = [pid for pid in self.workers() if pid not in exclude]
            return len(found) == count

        wait_until(ready, timeout=timeout, what=f"{count} worker(s) of {self.name}", step=0.05)
        return found

    def check_alive(self) -> None:
        if not self.running:
            code = self.proc.returncode if self.proc is not None else None
            raise AssertionError(f"{self.name} exited ({code}):\n{self.tail()}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def terminate(self) -> None:
        """One SIGTERM (a second one would mean "exit now, skip the drain")."""
        if self.proc is not None and self.proc.poll() is None and self._terminated != self.proc.pid:
            self.workers()  # remembered for the teardown, should the drain leave one behind
            self._terminated = self.proc.pid
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, *, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit code (the role drains: agents publish their partial interval)."""
        assert self.proc is not None
        self.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the role and every process of it (a node or pod dying at once)."""
        if self.proc is None:
            return
        self.workers()
        for pid, start in sorted(self.seen):
            st = stat(pid)
            if st is not None and st[1] == start:
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)

    def restart(self) -> Role:
        if self.running:
            self.kill()
        return self.start()

    def teardown(self) -> None:
        """Whatever happened, nothing of this role outlives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.workers()
        self.kill()

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _remember(self, pid: int) -> None:
        st = stat(pid)
        if st is not None:
            self.seen.add((pid, st[1]))
