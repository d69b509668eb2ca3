"""The kernel's own view of the lab's flows, read with conntrack-tools: ground truth of every exactness test.

Nothing here uses kubenetmon's reader: the counters come from ``conntrack -L -o extended,id`` (flows still in
the table) and ``conntrack -E -e DESTROY -o extended,id`` (final counters of flows that were destroyed while a
watch was running). Both are parsed from conntrack-tools' text output, independently of netlink decoding.

This module runs commands inside a named network namespace only; it never touches the host's table.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_FAMILIES: Final = {"ipv4": 4, "ipv6": 6}
_TUPLE_KEYS: Final = ("src", "dst", "sport", "dport", "packets", "bytes")


@dataclass(frozen=True)
class CtEntry:
    """One conntrack entry as conntrack-tools prints it (addresses normalised, counters as integers)."""

    family: int
    proto: str
    zone: int
    orig: tuple[str, str, int, int]
    reply: tuple[str, str, int, int]
    orig_packets: int
    orig_bytes: int
    reply_packets: int
    reply_bytes: int
    id: int
    mark: int
    state: str

    @property
    def counters(self) -> tuple[int, int, int, int]:
        return (self.orig_packets, self.orig_bytes, self.reply_packets, self.reply_bytes)


def _norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


def parse_line(line: str) -> CtEntry | None:
    """Parse one line of ``conntrack -L/-E -o extended,id``; None for anything that is not an entry."""
    words = line.split()
    if words and words[0].startswith("[") and words[0].endswith("]") and words[0][1:-1].isupper():
        words = words[1:]  # event type, e.g. [DESTROY]
    if len(words) < 5 or words[0] not in _FAMILIES:
        return None
    family, proto = _FAMILIES[words[0]], words[2]
    tuples: list[dict[str, str]] = [{}, {}]
    extra: dict[str, str] = {}
    state = ""
    side = 0
    for word in words[5:]:
        if "=" not in word:
            if word.isupper() and not word.startswith("["):
                state = word
            continue
        key, _, value = word.partition("=")
        if key in _TUPLE_KEYS:
            if key in tuples[side]:
                side = 1
            tuples[side][key] = value
        else:
            extra[key] = value
    orig, reply = tuples
    try:
        return _entry(family, proto, state, orig, reply, extra)
    except (KeyError, ValueError):  # not a whole entry: a line cut short when the watch is stopped
        return None


def _entry(
    family: int, proto: str, state: str, orig: dict[str, str], reply: dict[str, str], extra: dict[str, str]
) -> CtEntry:
    return CtEntry(
        family=family,
        proto=proto,
        zone=int(extra.get("zone", extra.get("zone-orig", "0"))),
        orig=(_norm(orig["src"]), _norm(orig["dst"]), int(orig.get("sport", 0)), int(orig.get("dport", 0))),
        reply=(
            _norm(reply["src"]),
            _norm(reply["dst"]),
            int(reply.get("sport", 0)),
            int(reply.get("dport", 0)),
        ),
        orig_packets=int(orig.get("packets", 0)),
        orig_bytes=int(orig.get("bytes", 0)),
        reply_packets=int(reply.get("packets", 0)),
        reply_bytes=int(reply.get("bytes", 0)),
        id=int(extra.get("id", 0)),
        mark=int(extra.get("mark", "0"), 0),
        state=state,
    )


def list_table(netns: str) -> list[CtEntry]:
    """Every entry of the namespace's conntrack table, both families, all zones."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-f", "ipv4", "-o", "extended,id"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out6 = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-f", "ipv6", "-o", "extended,id"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [e for e in map(parse_line, (out + out6).splitlines()) if e is not None]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, step: float = 0.02) -> None:
    """Wait for a condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def _subscribed(netns: str, pid: int) -> bool:
    """True once a NETLINK_NETFILTER socket of process ``pid`` is bound to the DESTROY group."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else []:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    table = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", "/proc/net/netlink"], capture_output=True, text=True
    ).stdout
    for row in table.splitlines()[1:]:
        cols = row.split()  # sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
        if len(cols) == 10 and cols[1] == "12" and int(cols[3], 16) & 0x4 and cols[9] in inodes:
            return True
    return False


class DestroyWatch:
    """``conntrack -E -e DESTROY`` running in a namespace, collecting final counters of destroyed flows."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.entries: list[CtEntry] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "conntrack", "-E", "-e", "DESTROY", "-o", "extended,id"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"destroy-watch-{netns}", daemon=True)
        self._reader.start()
        pid = self._proc.pid  # ip netns exec execs conntrack in place: same pid
        try:
            wait_until(lambda: _subscribed(netns, pid), timeout=10, what="conntrack -E to subscribe")
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.endswith("\n"):
                break  # the watch was stopped mid-line: the rest of an entry never comes
            entry = parse_line(line)
            if entry is not None:
                with self._lock:
                    self.entries.append(entry)

    def snapshot(self) -> list[CtEntry]:
        with self._lock:
            return list(self.entries)

    def wait_for(self, match: Callable[[CtEntry], bool], *, timeout: float = 10.0) -> CtEntry:
        """The DESTROY entry that ``match`` accepts, waiting for it."""
        found: list[CtEntry] = []

        def seen() -> bool:
            found[:] = [e for e in self.snapshot() if match(e)]
            return bool(found)

        wait_until(seen, timeout=timeout, what=f"a DESTROY event in {self.netns}")
        return found[-1]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout=5)

    def __enter__(self) -> DestroyWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_final(
    table: list[CtEntry], destroyed: list[CtEntry], match: Callable[[CtEntry], bool]
) -> Iterator[CtEntry]:
    """Entries accepted by ``match``: destroyed ones (final) first, then those still in the table."""
    yield from (e for e in destroyed if match(e))
    yield from (e for e in table if match(e))
