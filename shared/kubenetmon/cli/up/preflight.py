"""Checks ``kubenetmon up`` runs before starting anything, each failing with one line that says what to do.

Without privileges, without conntrack accounting, with a busy port or a data directory another run holds,
the user gets a ``ConfigError`` naming the fix (the sysctl to set, the flag to change), never a traceback
from a child process. The checks read state; the only thing they change is the lock they take.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

from kubenetmon.cli import natsserver
from kubenetmon.shared.errors import ConfigError

CAP_NET_ADMIN: Final = 12
ACCT: Final = "net/netfilter/nf_conntrack_acct"

NEEDS_ROOT: Final = (
    "reading the kernel's conntrack table needs root (CAP_NET_ADMIN): "
    "run it with sudo, e.g. `sudo {argv0} up`"
)
ACCOUNTING_OFF: Final = (
    "conntrack accounting is off{where} (net.netfilter.nf_conntrack_acct = {value}), so flows carry no "
    "byte counters: enable it with `sudo sysctl -w net.netfilter.nf_conntrack_acct=1`{how}, "
    "or try `kubenetmon up --demo`, which meters a lab of its own"
)
NO_CONNTRACK: Final = (
    "conntrack is not available{where} (no net.netfilter.nf_conntrack_acct): load it with "
    "`sudo modprobe nf_conntrack`, or try `kubenetmon up --demo`"
)


def effective_capabilities(status: str) -> int:
    """The ``CapEff`` mask of a ``/proc/<pid>/status`` text (0 if absent)."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges(*, status: str, argv0: str = "kubenetmon") -> None:
    if not effective_capabilities(status) & (1 << CAP_NET_ADMIN):
        raise ConfigError(NEEDS_ROOT.format(argv0=argv0))


def read_sysctl(path: str, *, netns: str = "") -> str:
    """``/proc/sys/<path>`` of this or a named network namespace; "" if it does not exist."""
    if not netns:
        try:
            return Path("/proc/sys", path).read_text().strip()
        except OSError:
            return ""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", f"/proc/sys/{path}"], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def check_accounting(read: Callable[[str], str], *, netns: str = "") -> None:
    """Refuse a conntrack table without counters (``read(path)`` reads a sysctl of the metered namespace)."""
    where = f" in network namespace {netns}" if netns else ""
    how = f" inside it (`ip netns exec {netns} sysctl -w ...`)" if netns else ""
    value = read(ACCT)
    if value == "":
        raise ConfigError(NO_CONNTRACK.format(where=where))
    if value != "1":
        raise ConfigError(ACCOUNTING_OFF.format(where=where, value=value, how=how))


def check_port(port: int, *, host: str = "127.0.0.1") -> None:
    """A fixed port must be free now (0 means: a free one will be chosen)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"--nats-port {port}: cannot bind {host}:{port} ({exc.strerror})") from None
            raise ConfigError(
                f"port {port} on {host} is already in use by another program: choose another --nats-port, "
                "or leave it out and a free port is used"
            ) from None


def check_files(*, inventory: str, kubeconfig: str) -> None:
    for flag, path in (("--inventory", inventory), ("--kubeconfig", kubeconfig)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")


def check_nats_binary() -> str:
    try:
        return natsserver.binary()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def check_netns(netns: str) -> None:
    if netns and not Path("/run/netns", netns).exists():
        raise ConfigError(f"--netns {netns}: no such network namespace (see `ip netns list`)")


class DataDirLock:
    """An exclusive lock on ``DIR/up.lock``: one run per data directory (chDB allows one owner)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "up.lock"
        self._fd = -1

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"--data-dir {self.path.parent}: cannot use it ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is in use by another `kubenetmon up` (pid {holder}): stop it first, "
                "or pass another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1
