"""Short-flow churn between two lab hosts, with nftables counters as a truth independent of conntrack.

Why: a metering bug hides in flows that live for less than a poll (opened, used and destroyed between two
dumps, their tuples soon reused). This drives thousands of such flows per second: every round is one short
TCP connection (``TCP_UP`` bytes up, ``TCP_DOWN`` down, the server closes first) and one UDP exchange (one
datagram each way, from a new source port each time), alternating IPv4 and IPv6. UDP source ports cycle
through a pool sized so that a port comes back after about ``reuse_s``: longer than a 1 s conntrack
timeout (so each exchange is a new conntrack) but short enough that the kernel reuses a freed conntrack for
the same tuples, the case that must still count as a new flow.

The truth: counters in the client namespace's ``output`` hook (packets to the server port) and ``input``
hook (packets from it), per protocol and family; they see the same packets conntrack accounts, whatever
conntrack does with them.

Processes (run inside a namespace with ``ip netns exec``): ``python -m kubenetmon.cli.lab.churn serve
--port P --ipv4 A --ipv6 B`` serves TCP and UDP on both addresses until killed; ``... run --ipv4 A --ipv6 B
--port P --seconds S --udp-ports FIRST:COUNT`` drives churn for S seconds and prints one JSON object of what
it did. This module must not talk to any address outside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

TCP_UP: Final = 3000
TCP_DOWN: Final = 2000
UDP_UP: Final = 100
UDP_DOWN: Final = 300
_HDR: Final = struct.Struct("!I")
_ZEROS: Final = bytes(65536)
TABLE: Final = "churn_truth"
TRUTH_KEYS: Final = tuple(
    f"{proto}{family}_{way}" for proto in ("tcp", "udp") for family in (4, 6) for way in ("out", "in")
)


def truth_ruleset(*, port: int) -> str:
    """nftables rules counting packets and bytes to and from ``port``, per protocol and family."""
    lines = [
        f"table inet {TABLE} {{",
        "  chain output { type filter hook output priority 0; policy accept;",
    ]
    for proto in ("tcp", "udp"):
        for family, nfproto in ((4, "ipv4"), (6, "ipv6")):
            lines.append(
                f'    meta nfproto {nfproto} {proto} dport {port} counter comment "{proto}{family}_out"'
            )
    lines += ["  }", "  chain input { type filter hook input priority 0; policy accept;"]
    for proto in ("tcp", "udp"):
        for family, nfproto in ((4, "ipv4"), (6, "ipv6")):
            lines.append(
                f'    meta nfproto {nfproto} {proto} sport {port} counter comment "{proto}{family}_in"'
            )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def read_truth(nft_json: str) -> dict[str, tuple[int, int]]:
    """``{'tcp4_out': (packets, bytes), ...}`` from ``nft -j list table inet churn_truth``."""
    out: dict[str, tuple[int, int]] = {}
    for item in json.loads(nft_json)["nftables"]:
        rule = item.get("rule")
        if not rule or rule.get("comment") not in TRUTH_KEYS:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                out[rule["comment"]] = (int(expr["counter"]["packets"]), int(expr["counter"]["bytes"]))
    return out


# -- server -----------------------------------------------------------------------------------------


def serve(*, addresses: list[str], port: int) -> None:
    """TCP and UDP on ``port`` of every address; one thread, non-blocking; runs until killed."""
    sel = selectors.DefaultSelector()
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, port))
        tcp.listen(4096)
        tcp.setblocking(False)
        sel.register(tcp, selectors.EVENT_READ, _accept)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((address, port))
        udp.setblocking(False)
        sel.register(udp, selectors.EVENT_READ, _datagram)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            key.data(sel, key.fileobj)


def _accept(sel: selectors.BaseSelector, sock: socket.socket) -> None:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, _Reader().on_read)


class _Reader:
    """One TCP request: a 4-byte ``down`` header and ``TCP_UP`` bytes in all; answer, then close first."""

    def __init__(self) -> None:
        self.got = bytearray()

    def on_read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.got += data
        if data and len(self.got) < TCP_UP:
            return
        sel.unregister(conn)
        if data:
            (down,) = _HDR.unpack_from(self.got)
            conn.setblocking(True)
            try:
                conn.sendall(_ZEROS[:down])
            except OSError:
                pass
        conn.close()


def _datagram(sel: selectors.BaseSelector, sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(65536)
        except BlockingIOError:
            return
        if len(data) >= _HDR.size:
            (down,) = _HDR.unpack_from(data)
            sock.sendto(_ZEROS[:down], peer)


# -- client -----------------------------------------------------------------------------------------


def run(*, servers: dict[int, str], port: int, seconds: float, udp_ports: range) -> Counter[str]:
    """Drive rounds for ``seconds``; the counts of what was done (flows, failures), by protocol and family."""
    done: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    request = _HDR.pack(TCP_DOWN) + _ZEROS[: TCP_UP - _HDR.size]
    datagram = _HDR.pack(UDP_DOWN) + _ZEROS[: UDP_UP - _HDR.size]
    rounds = 0
    while time.monotonic() < deadline:
        for _ in range(64):
            family = 4 if rounds % 2 == 0 else 6
            address, inet = servers[family], socket.AF_INET if family == 4 else socket.AF_INET6
            done[_outcome(f"tcp{family}", _tcp, inet, (address, port), request)] += 1
            sport = udp_ports[(rounds // 2) % len(udp_ports)]
            done[_outcome(f"udp{family}", _udp, inet, (address, port), sport, datagram)] += 1
            rounds += 1
    return done


def _outcome(name: str, attempt: Callable[..., None], *args: object) -> str:
    try:
        attempt(*args)
    except OSError as exc:
        return f"{name}_failed_{type(exc).__name__}"
    return name


def _tcp(family: int, server: tuple[str, int], request: bytes) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server)
        sock.sendall(request)
        got = 0
        while chunk := sock.recv(65536):
            got += len(chunk)
        if got != TCP_DOWN:
            raise ConnectionError(f"{got} of {TCP_DOWN} bytes")


def _udp(family: int, server: tuple[str, int], sport: int, datagram: bytes) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", sport))
        sock.sendto(datagram, server)
        if len(sock.recv(65536)) != UDP_DOWN:
            raise ConnectionError("short reply")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenetmon.cli.lab.churn", description=__doc__)
    parser.add_argument("role", choices=("serve", "run"))
    parser.add_argument("--ipv4", required=True, help="the server's IPv4 address")
    parser.add_argument("--ipv6", required=True, help="the server's IPv6 address")
    parser.add_argument("--port", type=int, required=True, help="the server port (TCP and UDP)")
    parser.add_argument("--seconds", type=float, default=15.0, help="run: how long to drive churn")
    parser.add_argument("--udp-ports", default="40000:1000", help="run: UDP source ports, FIRST:COUNT")
    args = parser.parse_args(argv)
    if args.role == "serve":
        serve(addresses=[args.ipv4, args.ipv6], port=args.port)
        return 0
    first, _, count = args.udp_ports.partition(":")
    done = run(
        servers={4: args.ipv4, 6: args.ipv6},
        port=args.port,
        seconds=args.seconds,
        udp_ports=range(int(first), int(first) + int(count)),
    )
    json.dump(dict(done), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
