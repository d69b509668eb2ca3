"""Traffic of known size between lab hosts: TCP and UDP servers and clients, IPv4 and IPv6.

Sockets are created inside a host's network namespace (by a thread that joined it) and then used from
ordinary threads: a socket stays in the namespace it was created in. Every client reports its flow's
5-tuple and the payload bytes it sent and received, so a test can find the flow in the kernel table.

Protocol (ours, trivial): TCP requests are an 8-byte header ``(up, down)`` followed by ``up`` payload bytes;
the server answers with ``down`` bytes. A UDP datagram carries a 4-byte ``down`` header; the server answers
with ``down`` bytes split into datagrams of at most ``UDP_CHUNK`` bytes (no IP fragmentation). The headers
count as payload. This module must not talk to any address outside the lab's namespaces.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

UDP_CHUNK: Final = 1200
_HDR: Final = struct.Struct("!II")
_UDP_HDR: Final = struct.Struct("!I")
_ZEROS: Final = bytes(65536)

SocketFactory = Callable[[int, int], socket.socket]


def _recv_exact(sock: socket.socket, n: int) -> bool:
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            return False
        n -= len(chunk)
    return True


def _send_zeros(sock: socket.socket, n: int) -> None:
    while n > 0:
        step = min(n, len(_ZEROS))
        sock.sendall(_ZEROS[:step])
        n -= step


@dataclass
class Flow:
    """A client's view of one flow: the original tuple as the kernel tracks it, and the payload moved."""

    proto: str
    family: int
    src: str
    sport: int
    dst: str
    dport: int
    sent: int = 0
    received: int = 0
    up_datagrams: int = 0
    down_datagrams: int = 0

    @property
    def orig(self) -> tuple[str, str, int, int]:
        return (self.src, self.dst, self.sport, self.dport)


class Server:
    """A TCP or UDP server on one address of a lab host, served by daemon threads."""

    def __init__(self, make: SocketFactory, *, proto: str, family: int, address: str, port: int = 0) -> None:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        self.proto, self.family, self.address = proto, family, address
        self.sock = make(socket.AF_INET if family == 4 else socket.AF_INET6, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.port: int = self.sock.getsockname()[1]
        self._closed = threading.Event()
        if proto == "tcp":
            self.sock.listen(128)
        target = self._accept_loop if proto == "tcp" else self._udp_loop
        threading.Thread(target=target, daemon=True, name=f"lab-{proto}-server").start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    head = bytearray()
                    while len(head) < _HDR.size:
                        chunk = conn.recv(_HDR.size - len(head))
                        if not chunk:
                            return
                        head += chunk
                    up, down = _HDR.unpack(head)
                    if not _recv_exact(conn, up):
                        return
                    _send_zeros(conn, down)
            except OSError:
                return

    def _udp_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            if len(data) < _UDP_HDR.size:
                continue
            (down,) = _UDP_HDR.unpack_from(data)
            while down > 0:
                step = min(down, UDP_CHUNK)
                self.sock.sendto(_ZEROS[:step], peer)
                down -= step

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TcpClient:
    """One TCP connection that stays open until ``close()``; each ``exchange`` moves known payload."""

    def __init__(
        self, make: SocketFactory, server: Server, *, dst: str = "", dport: int = 0, timeout: float = 10
    ):
        fam = socket.AF_INET if server.family == 4 else socket.AF_INET6
        self.sock = make(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((dst or server.address, dport or server.port))
        src, sport = self.sock.getsockname()[:2]
        peer, pport = self.sock.getpeername()[:2]
        self.flow = Flow("tcp", server.family, src, sport, peer, pport)

    def exchange(self, up: int, down: int) -> Flow:
        """Send ``up`` payload bytes (header included, so at least 8) and read ``down`` back."""
        body = max(up - _HDR.size, 0)
        self.sock.sendall(_HDR.pack(body, down))
        _send_zeros(self.sock, body)
        if not _recv_exact(self.sock, down):
            raise ConnectionError("server closed early")
        self.flow.sent += _HDR.size + body
        self.flow.received += down
        return self.flow

    def close(self) -> Flow:
        """Orderly close: FIN, wait for the server's FIN, close (the entry goes to TIME_WAIT)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()
        return self.flow


@dataclass
class UdpClient:
    """A UDP socket bound to one source port: one conntrack flow for all its datagrams."""

    make: SocketFactory
    server: Server
    dst: str = ""
    dport: int = 0
    timeout: float = 10.0
    flow: Flow = field(init=False)
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        fam = socket.AF_INET if self.server.family == 4 else socket.AF_INET6
        self.sock = self.make(fam, socket.SOCK_DGRAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.dst or self.server.address, self.dport or self.server.port))
        src, sport = self.sock.getsockname()[:2]
        peer, pport = self.sock.getpeername()[:2]
        self.flow = Flow("udp", self.server.family, src, sport, peer, pport)

    def exchange(self, up: int, down: int) -> Flow:
        """One request datagram of ``up`` bytes (>= 4), then ``down`` bytes of replies."""
        size = max(up, _UDP_HDR.size)
        self.sock.send(_UDP_HDR.pack(down) + _ZEROS[: size - _UDP_HDR.size])
        self.flow.sent += size
        self.flow.up_datagrams += 1
        got = 0
        while got < down:
            got += len(self.sock.recv(65536))
            self.flow.down_datagrams += 1
        self.flow.received += got
        return self.flow

    def close(self) -> Flow:
        self.sock.close()
        return self.flow
