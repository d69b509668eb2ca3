"""A small DNS server for the lab: answers UDP queries on port 53 of a lab host from a fixed zone, and
sends unsolicited answers on demand (forged or flooding ones). dnspython builds and parses every message.

Use::

    dns = DnsServer(lab.external("dns"), {("api.example.com", "A"): [("203.0.113.7", 3600)]})
    assert resolve(pod, dns.address, "api.example.com") == ["203.0.113.7"]
    dns.push(pod.ipv4, 40000, "x.example.com", "198.51.100.1", ttl=60)   # an answer nobody asked for
"""

from __future__ import annotations

import ipaddress
import socket
import threading

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.fixtures.lab import Host

Zone = dict[tuple[str, str], list[tuple[str, int]]]
"""(name, "A" or "AAAA") -> [(address, ttl)]."""


def answer_for(query: dns.message.Message, zone: Zone) -> dns.message.Message:
    """The response to ``query`` from ``zone`` (NXDOMAIN for names it does not hold)."""
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True)
    records = zone.get((name, dns.rdatatype.to_text(question.rdtype)))
    if records is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response
    for address, ttl in records:
        rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", rdtype, address))
    return response


class DnsServer:
    """Answers on ``host``'s IPv4 address, port 53, until ``close``; ``zone`` may change meanwhile."""

    def __init__(self, host: Host, zone: Zone) -> None:
        self.host, self.zone, self.address = host, zone, host.ipv4
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 53))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="lab-dns", daemon=True)
        self._thread.start()
        host.lab.closers.append(self.close)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            self.sock.sendto(answer_for(query, self.zone).to_wire(), peer)

    def push(self, to: str, port: int, name: str, address: str, *, ttl: int = 60) -> None:
        """Send, from port 53, an answer for ``name`` -> ``address`` that no one asked for."""
        rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        query = dns.message.make_query(name, rdtype)
        self.sock.sendto(answer_for(query, {(name, rdtype): [(address, ttl)]}).to_wire(), (to, port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def resolve(host: Host, server: str, name: str, rdtype: str = "A", *, source_port: int = 0) -> list[str]:
    """Ask ``server`` (port 53) from ``host``; the addresses answered ([] for none)."""
    sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host.ipv4, source_port))
        sock.settimeout(10)
        sock.sendto(dns.message.make_query(name, rdtype).to_wire(), (server, 53))
        response = dns.message.from_wire(sock.recv(4096))
    finally:
        sock.close()
    return [rdata.address for rrset in response.answer for rdata in rrset]
