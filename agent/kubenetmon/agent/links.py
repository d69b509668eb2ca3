"""The node's interfaces over rtnetlink: byte counters of its external interfaces, its addresses and routes.

Why it exists: conntrack only sees what passes through netfilter; traffic that bypasses it (a NOTRACK
rule, eBPF host routing, hardware offload) is invisible to a conntrack meter. The interfaces' own
counters see every frame, so the agent reads them every poll and the ledger carries both: what crossed
the node's external interfaces, and what conntrack metered of the flows that cross the node boundary
(``boundary``). ``check --coverage`` compares them.

Each poll sends one ``RTM_GETLINK`` per external interface (by index, never a dump of every pod's veth)
and reads ``rx_bytes`` + ``tx_bytes`` of ``IFLA_STATS64`` (64-bit counters). Once per report it dumps
the links (names), addresses and main-table routes: which interfaces are external (named by the
operator, else those of the default routes) and which destinations are inside the node.

Messages are encoded and decoded here with ``struct`` (a few attributes each): stock pyroute2 parses a
link message in about a millisecond and its ``IPRoute`` runs an event loop of its own, neither of which a
poll can afford. The socket is made inside the node's namespace like the conntrack sockets
(``conntrack.in_netns``, the module that owns pyroute2). Errors raise ``OSError``/``ValueError``; the
caller counts them and reports the interval's link bytes as not measured.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Final

from kubenetmon.agent.conntrack import in_netns

NETLINK_ROUTE: Final = 0
RTM_GETLINK, RTM_NEWLINK = 18, 16
RTM_GETADDR, RTM_NEWADDR = 22, 20
RTM_GETROUTE, RTM_NEWROUTE = 26, 24
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME, IFLA_STATS64 = 3, 23
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE, RTA_VIA = 1, 4, 5, 9, 15, 18
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
_NLMSG: Final = struct.Struct("=IHHII")
_IFINFO: Final = struct.Struct("=BxHiII")
_IFADDR: Final = struct.Struct("=BBBBI")
_RTMSG: Final = struct.Struct("=BBBBBBBBI")
_NEXTHOP: Final = struct.Struct("=HBBi")
_ATTR: Final = struct.Struct("=HH")
_STATS_BYTES: Final = struct.Struct("=16xQQ")
"""``rtnl_link_stats64``: rx_packets, tx_packets, then rx_bytes, tx_bytes."""
RECV_SIZE: Final = 1 << 16
_seq = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Layout:
    """The node's interfaces as one dump found them."""

    names: dict[int, str] = field(default_factory=dict)
    """Interface index -> name."""
    addresses: frozenset[bytes] = frozenset()
    """Every address of the node's interfaces (4 or 16 bytes)."""
    routes: tuple[tuple[bytes, int, int, bool], ...] = ()
    """Main-table unicast routes: (destination, prefix length, output interface, via a gateway)."""

    def external(self, patterns: tuple[str, ...]) -> dict[int, str]:
        """Interfaces named by ``patterns`` (shell globs), else those of the default routes."""
        if patterns:
            return {i: n for i, n in self.names.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        defaults = {oif for _, length, oif, _ in self.routes if length == 0 and oif}
        return {i: self.names[i] for i in defaults if i in self.names}


class Links:
    """An rtnetlink socket in the node's namespace: ``layout()`` per report, ``bytes_of()`` per poll."""

    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns
        self._sock = self._open()

    def _open(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.bind((0, 0))
            sock.settimeout(5.0)
            return sock

        return in_netns(self.netns, make)

    def bytes_of(self, indexes: list[int]) -> dict[int, int]:
        """Received plus sent bytes of each interface (an interface gone since is left out)."""
        out = {}
        for index in indexes:
            seq = next(_seq)
            body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
            try:
                for kind, payload in self._ask(RTM_GETLINK, body, seq=seq, dump=False):
                    if kind == RTM_NEWLINK:
                        stats = _attr(payload, _IFINFO.size, IFLA_STATS64)
                        if stats is not None and len(stats) >= _STATS_BYTES.size:
                            rx, tx = _STATS_BYTES.unpack_from(stats)
                            out[index] = rx + tx
            except FileNotFoundError:  # ENODEV: the interface is gone
                continue
        return out

    def layout(self) -> Layout:
        """Every interface's name, the node's addresses and its main-table unicast routes."""
        names: dict[int, str] = {}
        for kind, payload in self._ask(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if kind == RTM_NEWLINK:
                index = _IFINFO.unpack_from(payload)[2]
                name = _attr(payload, _IFINFO.size, IFLA_IFNAME)
                if name is not None:
                    names[index] = name.rstrip(b"\0").decode(errors="replace")
        addresses = set()
        for kind, payload in self._ask(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if kind == RTM_NEWADDR:
                for attr in (IFA_LOCAL, IFA_ADDRESS):
                    value = _attr(payload, _IFADDR.size, attr)
                    if value is not None and len(value) in (4, 16):
                        addresses.add(bytes(value))
        routes = []
        for kind, payload in self._ask(RTM_GETROUTE, _RTMSG.pack(socket.AF_UNSPEC, *[0] * 8)):
            if kind == RTM_NEWROUTE:
                route = _route(payload)
                if route is not None:
                    routes.append(route)
        return Layout(names, frozenset(addresses), tuple(routes))

    def _ask(self, kind: int, body: bytes, *, seq: int = 0, dump: bool = True) -> list[tuple[int, bytes]]:
        seq = seq or next(_seq)
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        try:
            self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body)
            out: list[tuple[int, bytes]] = []
            while True:
                done, messages = _messages(self._sock.recv(RECV_SIZE), seq)
                out += messages
                if done or not dump:
                    return out
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                self._sock.close()  # a broken reply must not be read as the next one's start
                self._sock = self._open()
            raise

    def close(self) -> None:
        self._sock.close()


def _messages(buf: bytes, seq: int) -> tuple[bool, list[tuple[int, bytes]]]:
    """The (type, payload) of each message of ``buf`` answering ``seq``; True once the reply is done."""
    off, out, done = 0, [], False
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, mseq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size or off + length > len(buf):
            raise ValueError(f"malformed rtnetlink message (length {length}) at {off}")
        if mseq == seq:
            if kind == NLMSG_ERROR:
                code = -int.from_bytes(buf[off + 16 : off + 20], "little", signed=True)
                if code:
                    raise OSError(code, f"rtnetlink: {os.strerror(code)}")
                done = True
            elif kind == NLMSG_DONE:
                done = True
            else:
                out.append((kind, buf[off + _NLMSG.size : off + length]))
        off += (length + 3) & ~3
    return done, out


def _attrs(payload: bytes, start: int) -> list[tuple[int, bytes]]:
    out, off = [], start
    while off + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, off)
        if length < _ATTR.size:
            break
        out.append((kind & 0x3FFF, payload[off + _ATTR.size : off + length]))
        off += (length + 3) & ~3
    return out


def _attr(payload: bytes, start: int, wanted: int) -> bytes | None:
    off = start
    while off + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, off)
        if length < _ATTR.size:
            return None
        if kind & 0x3FFF == wanted:
            return payload[off + _ATTR.size : off + length]
        off += (length + 3) & ~3
    return None


def _route(payload: bytes) -> tuple[bytes, int, int, bool] | None:
    """A main-table unicast route as (destination, prefix length, output interface, via a gateway)."""
    family, dst_len, _src, _tos, table, _proto, _scope, kind, _flags = _RTMSG.unpack_from(payload)
    if kind != RTN_UNICAST or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = dict(_attrs(payload, _RTMSG.size))
    if RTA_TABLE in attrs:  # the header holds only 8 bits of it
        table = int.from_bytes(attrs[RTA_TABLE][:4], "little")
    if table != RT_TABLE_MAIN:
        return None
    dst = attrs.get(RTA_DST, bytes(4 if family == socket.AF_INET else 16))
    oif = int.from_bytes(attrs[RTA_OIF][:4], "little") if RTA_OIF in attrs else 0
    gateway = RTA_GATEWAY in attrs or RTA_VIA in attrs
    if RTA_MULTIPATH in attrs:  # several next hops: the first one's device, and a gateway if any has one
        hops = attrs[RTA_MULTIPATH]
        if len(hops) >= _NEXTHOP.size:
            _len, _flags, _hops, oif = _NEXTHOP.unpack_from(hops)
        gateway = True
    return bytes(dst), dst_len, oif, gateway
