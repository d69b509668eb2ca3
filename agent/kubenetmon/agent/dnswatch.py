"""Watch the DNS answers that cross this node, and remember which name each address was answered for.

Why it exists: a conntrack flow knows addresses, users think in names. The node's pods resolve names
through a DNS server (CoreDNS, a node-local cache, an upstream resolver); every UDP answer from port 53
crosses the node's network namespace on its way to the pod. One packet socket (``AF_PACKET``, cooked, all
protocols) in the node's namespace, with a classic BPF filter in the kernel that passes only UDP packets
from port 53 (IPv4 without fragments, IPv6 without extension headers), sees those answers on every
interface; nothing else is copied to user space. Each answer is parsed with dnspython's wire parser and
its addresses go to the ``DnsCache``.

What is taken from an answer: a response (QR set) without error, with one question; the name asked for
(the question, not the end of a CNAME chain: a user asks for ``api.example.com``, not for the CDN edge it
is an alias of); the A and AAAA records of the answer section whose owner is the question or a name the
question's CNAME chain reaches within the answer (others are not about that name); each record valid for
its TTL, capped by the TTLs of the CNAMEs on the way. What is not seen: DNS over TCP, DNS over TLS or
HTTPS, answers that do not cross this namespace (a pod's own resolver cache, hostNetwork lookups answered
on loopback are seen, since loopback is in the namespace), fragmented answers.

Anyone on the node can send a UDP packet from port 53: a pod can forge an answer and give an address a
wrong name, or make it ambiguous. Names are labels, never bytes: a forged answer cannot change a count.

It must not touch the flow table; it only feeds the cache. Not thread-safe: the agent's loop thread reads it.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from typing import Final

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.wire

from kubenetmon.agent.conntrack import in_netns
from kubenetmon.agent.dnscache import DnsCache
from kubenetmon.shared.schema.names import valid_name

log = logging.getLogger(__name__)

ETH_P_ALL: Final = 0x0003
SO_ATTACH_FILTER: Final = 26
SO_RCVBUFFORCE: Final = 33
SOL_PACKET: Final = 263
PACKET_STATISTICS: Final = 6
RECV_SIZE: Final = 65535
DEFAULT_BUFFER: Final = 8 * 1024 * 1024
"""Receive buffer: the answers of one poll interval, with room (each packet costs about 1 KiB of it)."""
RECENT: Final = 512
"""Payloads remembered to skip the copies of one answer crossing several interfaces (veth, bridge, uplink)."""
MAX_CHAIN: Final = 8
"""CNAMEs followed from the question at most (resolvers stop at about as many)."""
_DNS_HEADER: Final = struct.Struct("!HHHHHH")
_RECORD: Final = struct.Struct("!HHIH")
"""A resource record after its owner name: type, class, TTL, data length."""
_TO_QUESTION: Final = b"\xc0\x0c"
"""A compression pointer to offset 12, where the question's name starts: most records' owner is written so."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


# Classic BPF (linux/filter.h opcodes) over the network header, as a cooked packet socket sees it.
_LDB, _LDH, _LDXMSH, _LDH_IND, _RSH = 0x30, 0x28, 0xB1, 0x48, 0x74
_JA, _JEQ, _JSET, _RET = 0x05, 0x15, 0x45, 0x06
FILTER: Final = (
    _insn(_LDB, 0, 0, 0),  # 0: A = first byte
    _insn(_RSH, 0, 0, 4),  # 1: A = IP version
    _insn(_JEQ, 0, 7, 4),  # 2: 4 -> 3, else -> 10
    _insn(_LDB, 0, 0, 9),  # 3: A = protocol
    _insn(_JEQ, 0, 11, 17),  # 4: UDP -> 5, else -> 16
    _insn(_LDH, 0, 0, 6),  # 5: A = flags and fragment offset
    _insn(_JSET, 9, 0, 0x1FFF),  # 6: a fragment after the first -> 16, else -> 7
    _insn(_LDXMSH, 0, 0, 0),  # 7: X = IPv4 header length
    _insn(_LDH_IND, 0, 0, 0),  # 8: A = UDP source port
    _insn(_JA, 0, 0, 4),  # 9: -> 14
    _insn(_JEQ, 0, 5, 6),  # 10: 6 -> 11, else -> 16
    _insn(_LDB, 0, 0, 6),  # 11: A = next header
    _insn(_JEQ, 0, 3, 17),  # 12: UDP -> 13, else -> 16
    _insn(_LDH, 0, 0, 40),  # 13: A = UDP source port
    _insn(_JEQ, 0, 1, 53),  # 14: 53 -> 15, else -> 16
    _insn(_RET, 0, 0, RECV_SIZE),  # 15: accept the whole packet
    _insn(_RET, 0, 0, 0),  # 16: drop
)


def attach_filter(sock: socket.socket, program: tuple[bytes, ...] = FILTER) -> None:
    """SO_ATTACH_FILTER: a ``struct sock_fprog`` (length, pointer to the instructions); the kernel copies."""
    code = ctypes.create_string_buffer(b"".join(program))
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program), ctypes.addressof(code))
    )


def open_socket(netns: str | None, *, buffer: int = DEFAULT_BUFFER) -> socket.socket:
    """The filtered packet socket, made in ``netns``; non-blocking."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            attach_filter(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    return in_netns(netns, make)


def udp_payload(packet: bytes) -> bytes | None:
    """The payload of a UDP packet from port 53 (IPv4 or IPv6 as the filter admits), else None.

    Checked again here: packets queued before the filter was attached passed no filter."""
    if len(packet) < 28:
        return None
    version = packet[0] >> 4
    if version == 4:
        start = (packet[0] & 0x0F) * 4
        if packet[9] != 17 or start < 20 or int.from_bytes(packet[6:8]) & 0x1FFF:
            return None
    elif version == 6 and len(packet) >= 48 and packet[6] == 17:
        start = 40
    else:
        return None
    if len(packet) < start + 8 or packet[start : start + 2] != b"\x00\x35":
        return None
    return packet[start + 8 :]


def answers(payload: bytes) -> tuple[str, list[tuple[bytes, int]]] | None:
    """The name asked for and the addresses answered for it, each with its TTL; None if the payload is
    not a usable answer (not a response, an error, no address, not DNS, a name we would not store).

    dnspython's wire parser reads the names (compression pointers, loops and bounds are its business);
    the records' fixed fields are read here, and only the answer section: a whole ``dns.message`` parse
    (rdata objects, rrsets, EDNS, the other sections) costs several times as much per answer.
    """
    if len(payload) < _DNS_HEADER.size:
        return None
    _, flags, questions, count, _, _ = _DNS_HEADER.unpack_from(payload)
    if not flags & 0x8000 or flags & 0x000F or questions != 1 or not count:  # cheap refusals first
        return None
    try:
        records = _records(payload, count)
    except (dns.exception.DNSException, struct.error, ValueError):
        return None
    asked, aliases, addresses = records
    text = asked.to_text(omit_final_dot=True).lower()
    if not valid_name(text):
        return None
    chain, name, ttl = {asked: _NO_TTL}, asked, _NO_TTL
    for _ in range(MAX_CHAIN):  # the CNAME chain from the question, as far as the answer states it
        alias = aliases.get(name)
        if alias is None:
            break
        name, ttl = alias[0], min(ttl, alias[1])
        if name in chain:
            break
        chain[name] = ttl
    if len(chain) == 1:  # no alias: the records of the question's own name (the same object, mostly)
        found = [(address, life) for owner, address, life in addresses if owner is asked or owner == asked]
    else:
        found = [(address, min(life, chain[owner])) for owner, address, life in addresses if owner in chain]
    return (text, found) if found else None


_NO_TTL: Final = 1 << 32
_A, _AAAA, _CNAME, _IN = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdataclass.IN
_LENGTHS: Final = {_A: 4, _AAAA: 16}


_Aliases = dict[dns.name.Name, tuple[dns.name.Name, int]]
_Addresses = list[tuple[dns.name.Name, bytes, int]]


def _records(payload: bytes, count: int) -> tuple[dns.name.Name, _Aliases, _Addresses]:
    """The question's name, the answer section's CNAMEs (owner -> target, TTL; the first of an owner)
    and its A/AAAA records (owner, address, TTL); other records are skipped."""
    parser = dns.wire.Parser(payload, _DNS_HEADER.size)
    asked = dns.name.from_wire_parser(parser)
    parser.get_struct("!HH")  # the question's type and class
    aliases: _Aliases = {}
    addresses: _Addresses = []
    for _ in range(count):
        at = parser.current
        if payload[at : at + 2] == _TO_QUESTION:  # the question's name, already read: not decoded again
            parser.seek(at + 2)
            owner = asked
        else:
            owner = dns.name.from_wire_parser(parser)
        rdtype, rdclass, ttl, length = _RECORD.unpack(parser.get_bytes(_RECORD.size))
        if rdclass == _IN and _LENGTHS.get(rdtype) == length:
            addresses.append((owner, parser.get_bytes(length), ttl))
        elif rdclass == _IN and rdtype == _CNAME:
            with parser.restrict_to(length):
                aliases.setdefault(owner, (dns.name.from_wire_parser(parser), ttl))
        else:
            parser.get_bytes(length)
    return asked, aliases, addresses


class DnsWatch:
    """The packet socket of one namespace, read into a ``DnsCache``."""

    def __init__(self, cache: DnsCache, *, netns: str | None = None, buffer: int = DEFAULT_BUFFER) -> None:
        self.cache = cache
        self.sock = open_socket(netns, buffer=buffer)
        self.answers = 0
        """Usable answers read (each copy of a packet once per read)."""
        self.lost = 0
        """Packets the socket dropped (its receive buffer was full): answers never seen."""
        self._recent: dict[bytes, None] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, *, now: float, limit: int = 100_000) -> int:
        """Drain the socket (at most ``limit`` packets) into the cache; usable answers read."""
        recent = self._recent  # one answer crosses several interfaces, maybe read by different calls
        recv, cache, read = self.sock.recv, self.cache, 0
        for _ in range(limit):
            try:
                packet = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            payload = udp_payload(packet)
            if payload is None or payload in recent:
                continue
            recent[payload] = None
            if len(recent) > RECENT:
                del recent[next(iter(recent))]
            answer = answers(payload)
            if answer is None:
                continue
            name, addresses = answer
            for address, ttl in addresses:
                cache.answer(name, address, ttl, now=now)
            read += 1
        self.answers += read
        self.lost += self._drops()
        return read

    def _drops(self) -> int:
        """Packets dropped since the last call (PACKET_STATISTICS resets on read)."""
        try:
            _, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return 0
        return int(drops)

    def close(self) -> None:
        self.sock.close()
