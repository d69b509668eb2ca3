"""The kernel side of the agent: ctnetlink sockets for full conntrack dumps and DESTROY events.

This is the only module that uses pyroute2 (to enter network namespaces), imported only when a namespace
is entered: the dump tool's start-up must stay short (pyroute2 takes ~0.1 s to import). The one request it
sends, a dump, is a fixed 20-byte message encoded here.
Dumps ask for both families and every zone in one request and never zero counters (no GET_CTRZERO: zeroing
would lose data when a send fails and steal counters from anything else reading them). The event socket
is subscribed to DESTROY only, with a receive buffer as large as the kernel allows; an overrun (ENOBUFS) is
counted and flagged so the caller resyncs with a dump. Neither ever raises for an overrun. ``stats`` reads
conntrack's own counters (what it could not track; decoded by ``ctstats``) on the dump socket, and
``timestamps`` whether the namespace stamps new conntracks with a creation time (``nf_conntrack_timestamp``,
read through a descriptor opened in the namespace: a sysctl file stays the namespace's it was opened in).

Sockets are made inside ``netns`` (a name under /run/netns, or a path) by a short-lived thread that joins
the namespace: a socket stays in the namespace it was created in, and the process itself never moves.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from kubenetmon.agent import ctstats
from kubenetmon.agent.ctnetlink import DONE, INTERRUPTED, Decoder, Message, Sink
from kubenetmon.shared.errors import ConfigError

T = TypeVar("T")
Batch = Callable[[list[bytes], list[bytes]], None]
"""Receives a kernel batch of dump entries: their keys, and their counters in the same order."""
SO_RCVBUFFORCE: Final = 33
NETLINK_NETFILTER: Final = 12
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
CT_GET: Final = 1 << 8 | 1  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
NFNLGRP_CONNTRACK_DESTROY: Final = 3
TIMESTAMP_SYSCTL: Final = "/proc/sys/net/netfilter/nf_conntrack_timestamp"
_REQUEST: Final = struct.Struct("=IHHIIBBH")
"""nlmsghdr (length, type, flags, seq, pid) and nfgenmsg (family, version, res_id)."""
RECV_SIZE: Final = 1 << 16
DEFAULT_EVENT_BUFFER: Final = 256 * 1024 * 1024
_seq = itertools.count(1)


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in network namespace ``netns`` (None: the current one) and return its result."""
    if not netns:
        return fn()
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            from pyroute2 import netns as pyroute2_netns  # here: ~0.1 s to import, only when needed

            pyroute2_netns.setns(netns, flags=0)  # flags=0: never create a missing namespace
            box.append(fn())
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def read_sysctl(path: str, *, netns: str | None = None) -> str:
    """``/proc/sys/<path>`` as seen from ``netns``; '' if it does not exist."""

    def read() -> str:
        try:
            return Path("/proc/sys", path).read_text().strip()
        except FileNotFoundError:
            return ""

    return in_netns(netns, read)


def write_sysctl(path: str, value: str, *, netns: str | None = None) -> None:
    """Set ``/proc/sys/<path>`` as seen from ``netns``."""
    in_netns(netns, lambda: Path("/proc/sys", path).write_text(value))


def _open(netns: str | None, *, groups: int = 0) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        sock.bind((0, groups))
        return sock

    return in_netns(netns, make)


def dump_request(seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET with NLM_F_DUMP for every family (AF_UNSPEC) and every zone."""
    return _REQUEST.pack(_REQUEST.size, CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, socket.AF_UNSPEC, 0, 0)


@dataclass(frozen=True, slots=True)
class DumpResult:
    entries: int
    consistent: bool
    """False when the kernel flagged the dump as interrupted: absent entries prove nothing."""
    seconds: float


class Conntrack:
    """One namespace's conntrack table: ``dump()`` the whole of it, ``read_events()`` the DESTROYs."""

    def __init__(
        self, *, netns: str | None = None, events: bool = True, event_buffer: int = DEFAULT_EVENT_BUFFER
    ) -> None:
        self.netns = netns
        self.overruns = 0
        """DESTROY events lost to a full receive buffer (ENOBUFS), since start."""
        self.resync_needed = False
        self.event_buffer = 0
        self._dump_sock = _open(netns)
        self._dump_sock.settimeout(30.0)
        self._dump_decoder = Decoder()
        self._event_decoder = Decoder()
        self._events: socket.socket | None = None
        self._timestamp_fd = in_netns(netns, _open_timestamp_sysctl)
        if events:
            self._events = _open(netns, groups=1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
            self._events.setblocking(False)
            self.event_buffer = _grow_buffer(self._events, event_buffer)

    def dump(self, consume: Batch) -> DumpResult:
        """Pass every entry's key and counters to ``consume``, two lists per kernel batch."""
        start = time.monotonic()
        sock, recv, columns = self._dump_sock, self._dump_sock.recv, self._dump_decoder.columns
        flags = count = 0
        try:
            sock.send(dump_request(next(_seq)))
            while not flags & DONE:
                keys: list[bytes] = []
                cnts: list[bytes] = []
                flags |= columns(recv(RECV_SIZE), keys, cnts)
                count += len(keys)
                consume(keys, cnts)
        except (OSError, ValueError):
            self._reopen()  # the rest of a broken dump must not be read as the start of the next one
            raise
        return DumpResult(count, not flags & INTERRUPTED, time.monotonic() - start)

    def _reopen(self) -> None:
        self._dump_sock.close()
        self._dump_sock = _open(self.netns)
        self._dump_sock.settimeout(30.0)

    def dump_messages(self, consume: Callable[[list[Message]], None]) -> DumpResult:
        """Like ``dump``, but every entry fully decoded (for the dump tool; slower)."""
        start = time.monotonic()
        self._dump_sock.send(dump_request(next(_seq)))
        flags = count = 0
        while not flags & DONE:
            batch: list[Message] = []
            flags |= self._dump_decoder.messages(self._dump_sock.recv(RECV_SIZE), batch)
            count += len(batch)
            consume(batch)
        return DumpResult(count, not flags & INTERRUPTED, time.monotonic() - start)

    def stats(self) -> ctstats.Stats:
        """The namespace's conntrack statistics (per-CPU counters summed, entries, the table limit)."""
        totals: dict[str, int] = {}
        try:
            for kind in (ctstats.CT_GET_STATS_CPU, ctstats.CT_GET_STATS):
                self._dump_sock.send(ctstats.request(kind, seq=next(_seq)))
                while not ctstats.decode(self._dump_sock.recv(RECV_SIZE), totals):
                    pass
        except (OSError, ValueError):
            self._reopen()
            raise
        return ctstats.stats_of(totals)

    def dump_raw(self, consume: Callable[[bytes], tuple[int, int]]) -> DumpResult:
        """Pass every kernel batch of a dump, as received, to ``consume``, which decodes it and returns
        how many entries it held and the decoder's flags (DONE ends the dump). For the dump tool."""
        start = time.monotonic()
        self._dump_sock.send(dump_request(next(_seq)))
        flags = count = 0
        while not flags & DONE:
            entries, seen = consume(self._dump_sock.recv(RECV_SIZE))
            count, flags = count + entries, flags | seen
        return DumpResult(count, not flags & INTERRUPTED, time.monotonic() - start)

    def dump_totals(self) -> list[int]:
        """Entries and the sums of their four counters, dying ones too (for ``dump --summary``)."""
        self._dump_sock.send(dump_request(next(_seq)))
        sums, flags = [0, 0, 0, 0, 0], 0
        while not flags & DONE:
            flags |= self._dump_decoder.totals(self._dump_sock.recv(RECV_SIZE), sums)
        return sums

    def event_fd(self) -> int:
        """The event socket's descriptor, for an event loop reader (-1 without events)."""
        return self._events.fileno() if self._events is not None else -1

    def read_events(self, sink: Sink, *, limit: int = 1 << 30) -> int:
        """Pass every queued DESTROY event's ``(key, final counters)`` to ``sink``, without blocking."""
        if self._events is None:
            return 0
        count, recv, scan = 0, self._events.recv, self._event_decoder.scan
        while count < limit:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # events were dropped by the kernel: the caller must resync
                self.resync_needed = True
                continue
            count += 1
            scan(data, sink)
        return count

    @property
    def slow_decodes(self) -> int:
        """Messages decoded the slow way (one per new shape, normally)."""
        return self._dump_decoder.walked + self._event_decoder.walked

    @property
    def dying_skipped(self) -> int:
        """Dump entries skipped because they were dying (their DESTROY event has their counters)."""
        return self._dump_decoder.dying

    def timestamps(self) -> bool | None:
        """Whether new conntracks get a creation time (``nf_conntrack_timestamp``); None if unreadable."""
        if self._timestamp_fd < 0:
            return None
        try:
            return os.pread(self._timestamp_fd, 16, 0).strip() != b"0"
        except OSError:
            return None

    def close(self) -> None:
        self._dump_sock.close()
        if self._events is not None:
            self._events.close()
        if self._timestamp_fd >= 0:
            os.close(self._timestamp_fd)
            self._timestamp_fd = -1


def open_conntrack(netns: str, *, events: bool = True, event_buffer: int = 1 << 20) -> Conntrack:
    """The conntrack sockets, with clear errors for a missing namespace or missing privileges."""
    try:
        return Conntrack(netns=netns or None, events=events, event_buffer=event_buffer)
    except FileNotFoundError:
        raise ConfigError(f"--netns: network namespace {netns!r} does not exist") from None
    except PermissionError as exc:
        raise ConfigError(
            f"cannot open conntrack netlink sockets ({exc}): run as root or with NET_ADMIN"
        ) from None


def _open_timestamp_sysctl() -> int:
    """A descriptor of this namespace's ``nf_conntrack_timestamp`` (-1 if it has none)."""
    try:
        return os.open(TIMESTAMP_SYSCTL, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _grow_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer (forced with CAP_NET_ADMIN), return what was granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2
