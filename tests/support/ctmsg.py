"""Builds ctnetlink messages the way the kernel lays them out, for decoder and flow-table tests.

Attribute order follows the kernel's dump: tuples, zone, status, mark, id, use, timeout, protoinfo,
counters (DESTROY events use the same helper with ``event=True``: no use/timeout, mark only if set).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from kubenetmon.agent import ctnetlink as ct

NLM_F_MULTI = 2


def attr(kind: int, payload: bytes, *, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind | (0x8000 if nested else 0)) + payload + b"\0" * (-length % 4)


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def tuple_attr(kind: int, src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    v6 = ipaddress.ip_address(src).version == 6
    ips = attr(3 if v6 else 1, _ip(src)) + attr(4 if v6 else 2, _ip(dst))
    ports = (
        b""
        if proto not in (6, 17, 132)
        else attr(2, sport.to_bytes(2, "big")) + attr(3, dport.to_bytes(2, "big"))
    )
    body = attr(1, ips, nested=True) + attr(2, attr(1, bytes([proto])) + ports, nested=True)
    return attr(kind, body, nested=True)


@dataclass(frozen=True)
class Entry:
    src: str = "10.0.0.1"
    dst: str = "10.0.0.2"
    sport: int = 1000
    dport: int = 80
    proto: int = 6
    reply_src: str = ""
    reply_dst: str = ""
    zone: int = 0
    ident: int = 1
    counters: tuple[int, int, int, int] = (1, 60, 1, 60)
    mark: int = 0
    status: int = 0x18E
    state: int = 3
    start: int = 0
    """Creation time (CTA_TIMESTAMP_START, ns); 0: no timestamp (``nf_conntrack_timestamp`` off)."""
    labels: bytes = b""
    """CTA_LABELS (connlabels), after the mark; empty: none."""
    sctp_state: int = -1
    """SCTP only: a CTA_PROTOINFO_SCTP state (-1: no protoinfo)."""

    def message(self, *, event: bool = False, kind: int = ct.CT_NEW, seq: int = 0) -> bytes:
        family = 10 if ipaddress.ip_address(self.src).version == 6 else 2
        body = tuple_attr(1, self.src, self.dst, self.proto, self.sport, self.dport)
        body += tuple_attr(
            2, self.reply_src or self.dst, self.reply_dst or self.src, self.proto, self.dport, self.sport
        )
        if self.zone:
            body += attr(ct.CTA_ZONE, self.zone.to_bytes(2, "big"))
        body += attr(ct.CTA_STATUS, self.status.to_bytes(4, "big"))
        if self.mark or not event:
            body += attr(ct.CTA_MARK, self.mark.to_bytes(4, "big"))
        if self.labels:
            body += attr(22, self.labels)  # CTA_LABELS
        body += attr(ct.CTA_ID, self.ident.to_bytes(4, "big"))
        if not event:
            body += attr(11, (1).to_bytes(4, "big")) + attr(7, (300).to_bytes(4, "big"))
        if self.proto == 6:
            tcp = attr(1, bytes([self.state])) + attr(2, b"\x0a") + attr(3, b"\x0a")
            body += attr(ct.CTA_PROTOINFO, attr(1, tcp, nested=True), nested=True)
        elif self.proto == 132 and self.sctp_state >= 0:
            sctp = attr(1, bytes([self.sctp_state])) + attr(2, (7).to_bytes(4, "big"))
            body += attr(ct.CTA_PROTOINFO, attr(3, sctp, nested=True), nested=True)
        body += ct.counters_blob(*self.counters)
        if self.start:  # after the counters, as the kernel lays it out; a DESTROY also has the stop time
            stamp = attr(ct.CTA_TIMESTAMP_START, self.start.to_bytes(8, "big"))
            if event:
                stamp += attr(2, (self.start + 5_000_000).to_bytes(8, "big"))
            body += attr(ct.CTA_TIMESTAMP, stamp, nested=True)
        head = struct.pack("=IHHII", 20 + len(body), kind, NLM_F_MULTI, seq, 0) + struct.pack(
            "=BBH", family, 0, 0
        )
        return head + body

    def key(self) -> bytes:
        out: list[tuple[bytes, bytes]] = []
        ct.Decoder().scan(self.message(event=True, kind=ct.CT_DELETE), out.append)
        return out[0][0]


def done(flags: int = NLM_F_MULTI) -> bytes:
    return struct.pack("=IHHII", 20, ct.NLMSG_DONE, flags, 0, 0) + b"\0" * 4


def error(code: int) -> bytes:
    return struct.pack("=IHHII", 36, ct.NLMSG_ERROR, 0, 0, 0) + struct.pack("=i", -code) + b"\0" * 16
