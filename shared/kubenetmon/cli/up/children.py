"""The processes ``kubenetmon up`` starts: spawned so that none outlives it, watched without polling.

Every child is started from the event loop's thread (the kernel ties ``PR_SET_PDEATHSIG`` to the thread
that forked it) in a process group of its own, so a terminal's Ctrl-C reaches ``up`` alone and ``up``
decides the order of shutdown; and with ``PR_SET_PDEATHSIG = SIGTERM``, so that even a SIGKILLed ``up``
leaves nothing running: each child then drains as it would on a normal SIGTERM. A child's exit is seen
through a pidfd readable on the event loop, never by polling.

This module knows processes, not roles: the pipeline decides what runs and in which order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

from kubenetmon.shared.parentdeath import die_with

log = logging.getLogger(__name__)

_KILL_WAIT_S: Final = 5.0


def kubenetmon_command(*args: str) -> list[str]:
    """``kubenetmon ARGS`` run with this interpreter, exactly as a container would run it."""
    return [sys.executable, "-m", "kubenetmon.cli.main", *args]


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: a process group of its own, SIGTERM when ``up`` dies, exit if it already has.

    Built before the fork, so the child only makes two system calls and compares two integers.
    """
    arm = die_with(os.getpid())

    def setup() -> None:
        os.setpgid(0, 0)
        arm()

    return setup


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: ``up``'s, minus ``KUBENETMON_*`` (their settings come from ``up``'s
    flags only, so every process agrees on the topology whatever the shell exported)."""
    return {k: v for k, v in environ.items() if not k.startswith("KUBENETMON_")}


class Child:
    """One child process: ``start()``, ``await exited()``, ``await stop()``.

    Its stderr goes to ``log_path``; its stdout too, unless ``stdout`` is ``inherit`` (the live view
    draws on ``up``'s terminal) or ``pipe`` (``read_line`` reads it).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        stdout: str = "log",
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._env = dict(env)
        self._stdout = stdout
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pidfd = -1
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def start(self) -> None:
        """Start the process and watch for its exit (call from the event loop's thread)."""
        loop = asyncio.get_running_loop()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            out: IO[bytes] | int | None = {"inherit": None, "pipe": subprocess.PIPE}.get(
                self._stdout, log_file
            )
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log_file,
                env=self._env,
                preexec_fn=die_with_parent(),
            )
        self._exited = loop.create_future()
        self._pidfd = os.pidfd_open(self._proc.pid)
        loop.add_reader(self._pidfd, self._reap)
        log.debug("started %s", self.name, extra={"pid": self._proc.pid, "command": self.command})

    def _reap(self) -> None:
        """The pidfd became readable: the process has exited."""
        assert self._proc is not None and self._exited is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        code = self._proc.wait()
        if not self._exited.done():
            self._exited.set_result(code)

    async def exited(self) -> int:
        """The exit code, once the process has exited."""
        assert self._exited is not None, "not started"
        return await asyncio.shield(self._exited)

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def stop(self, *, timeout_s: float) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; the exit code (None if never started)."""
        if self._exited is None:
            return None
        if not self._exited.done():
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited(), timeout_s)
            except TimeoutError:
                log.warning("%s did not stop within %.0fs: killing it", self.name, timeout_s)
                self.signal(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.exited(), _KILL_WAIT_S)
        return self.returncode

    async def finish(self, *, timeout_s: float) -> int | None:
        """Let it end by itself within ``timeout_s``, else stop it."""
        assert self._exited is not None, "not started"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited(), timeout_s)
        return await self.stop(timeout_s=_KILL_WAIT_S)

    async def read_line(self, *, timeout_s: float) -> str:
        """The next line of a ``pipe`` child's stdout; ``TimeoutError``, or "" once it closed it."""
        assert self._proc is not None and self._proc.stdout is not None, "not a started pipe child"
        fd = self._proc.stdout.fileno()
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while b"\n" not in self._buffer:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(deadline - loop.time(), 0))
            finally:
                loop.remove_reader(fd)
            chunk = os.read(fd, 65536)
            if not chunk:
                return self._buffer.decode(errors="replace")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def last_words(self, lines: int = 3) -> str:
        """The last lines it logged (for a message saying why it stopped)."""
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(tail)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
