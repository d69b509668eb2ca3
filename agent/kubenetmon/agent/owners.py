"""Which pod owns a node socket: socket (sock_diag) -> owning process (/proc/*/fd) -> its cgroup -> pod UID.

Why it exists: a flow whose local side is the node's own address is metered as a node row; when the
socket belongs to a hostNetwork pod (an ingress controller, a CNI or logging agent), the enricher can name
that pod if the agent says whose socket it was. Once per report, for the rows whose local side is one of
the node's addresses, the agent asks the kernel for the node namespace's TCP and UDP sockets
(``SOCK_DIAG_BY_FAMILY``, the interface ``ss`` uses), finds the process holding each matching socket's
inode among the ``/proc/<pid>/fd`` links, and reads the pod UID from that process's cgroup path:
cgroup v1 (``.../kubepods/burstable/pod<uid>/<container>``) and cgroup v2 with the systemd driver
(``.../kubepods-burstable-pod<uid_with_underscores>.slice/...``) or the cgroupfs driver alike.

Limits, by construction: a socket already closed when the report is cut (a short connection that ended
in the interval) has no owner any more, so its row stays the node's; the agent must see the node's
processes (``hostPID: true``, or the host's ``/proc`` mounted at ``--proc-root``); sock_diag needs Linux
4.x or later (``inet_diag`` with ``SOCK_DIAG_BY_FAMILY``, any kernel a Kubernetes node runs), cgroup paths
need a kubelet that names pod cgroups by UID (every one since 1.10). A process of no pod (the kubelet,
containerd) has no UID: its rows stay the node's. Nothing here is ever guessed.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from kubenetmon.agent.conntrack import in_netns

NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSG: Final = struct.Struct("=IHHII")
_REQ: Final = struct.Struct("=BBBxI")
_SOCKID: Final = struct.Struct("!HH16s16s")
"""inet_diag_sockid: source and destination port (big-endian), source and destination address."""
_SOCKID_SIZE: Final = 48
_MSG_HEAD: Final = struct.Struct("=BBBB")
_MSG_TAIL: Final = struct.Struct("=IIIII")
"""expires, rqueue, wqueue, uid, inode."""
ALL_STATES: Final = 0xFFFFFFFF
TCP, UDP = 6, 17
_UID: Final = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")

SocketKey = tuple[int, bytes, int, bytes, int]
"""(protocol, local address, local port, remote address, remote port); addresses of 4 or 16 bytes."""


def pod_uid(cgroup_text: str) -> str:
    """The pod UID in a ``/proc/<pid>/cgroup`` text, '' if the process is in no pod's cgroup."""
    found = _UID.search(cgroup_text)
    return found.group(1).replace("_", "-") if found else ""


class Sockets:
    """A sock_diag socket in the node's namespace; ``owners`` answers for the rows of one report."""

    def __init__(self, *, netns: str | None = None, proc_root: str = "/proc") -> None:
        self.netns = netns
        self.proc = Path(proc_root)

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            sock.bind((0, 0))
            sock.settimeout(5.0)
            return sock

        self._sock = in_netns(netns, make)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def inodes(self) -> dict[SocketKey, int]:
        """Every TCP and UDP socket of the namespace (IPv4 and IPv6) by its addresses and ports."""
        out: dict[SocketKey, int] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto in (TCP, UDP):
                self._dump(family, proto, out)
        return out

    def _dump(self, family: int, proto: int, out: dict[SocketKey, int]) -> None:
        self._seq += 1
        body = _REQ.pack(family, proto, 0, ALL_STATES) + bytes(_SOCKID_SIZE)
        head = _NLMSG.pack(
            _NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        self._sock.send(head + body)
        length = 4 if family == socket.AF_INET else 16
        while True:
            buf = self._sock.recv(1 << 16)
            off = 0
            while off + _NLMSG.size <= len(buf):
                size, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, off)
                if size < _NLMSG.size or off + size > len(buf):
                    raise ValueError(f"malformed sock_diag message (length {size})")
                if seq == self._seq:
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        code = -int.from_bytes(buf[off + 16 : off + 20], "little", signed=True)
                        if code:
                            raise OSError(code, f"sock_diag: {os.strerror(code)}")
                        return
                    at = off + _NLMSG.size + _MSG_HEAD.size
                    sport, dport, src, dst = _SOCKID.unpack_from(buf, at)
                    inode = _MSG_TAIL.unpack_from(buf, at + _SOCKID_SIZE)[4]
                    if inode:
                        out[(proto, src[:length], sport, dst[:length], dport)] = inode
                off += (size + 3) & ~3

    def pids(self, inodes: Iterable[int]) -> dict[int, int]:
        """The process holding each socket inode (the first found), from ``/proc/<pid>/fd``."""
        wanted = {f"socket:[{inode}]": inode for inode in inodes}
        found: dict[int, int] = {}
        if not wanted:
            return found
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            try:
                fds = os.scandir(Path(entry.path, "fd"))
            except OSError:  # gone, or not ours to read
                continue
            with fds:
                for fd in fds:
                    try:
                        inode = wanted.get(os.readlink(fd.path))
                    except OSError:
                        continue
                    if inode is not None and inode not in found:
                        found[inode] = int(entry.name)
            if len(found) == len(wanted):
                break
        return found

    def uid_of(self, pid: int) -> str:
        try:
            return pod_uid(Path(self.proc, str(pid), "cgroup").read_text())
        except OSError:
            return ""

    def owners(self, rows: Sequence[Any], candidates: Sequence[tuple[int, int]]) -> dict[int, str]:
        """Row index -> pod UID for ``candidates`` = (row index, own side: 0 opener, 1 responder)."""
        sockets = self.inodes()
        by_port: dict[tuple[int, bytes, int], int] = {}
        for (proto, src, sport, _dst, _dport), inode in sockets.items():
            by_port.setdefault((proto, src, sport), inode)  # listening or unconnected: (addr, port) only
        picked: dict[int, int] = {}
        for j, side in candidates:
            row = rows[j]
            local, lport, remote, rport = (
                (row[3], row[5], row[4], row[6]) if side == 0 else (row[7], row[9], row[8], row[10])
            )
            found = (
                sockets.get((row[0], local, lport, remote, rport))
                or by_port.get((row[0], local, lport))
                or by_port.get((row[0], bytes(len(local)), lport))
            )
            if found:
                picked[j] = found
        pids = self.pids(set(picked.values()))
        uids = {pid: self.uid_of(pid) for pid in set(pids.values())}
        out = {}
        for j, held in picked.items():
            uid = uids.get(pids.get(held, -1), "")
            if uid:
                out[j] = uid
        return out
