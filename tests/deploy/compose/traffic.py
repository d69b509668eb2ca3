"""Traffic generator of the compose stack: UDP datagrams whose kernel byte count is known exactly.

``send`` sends ``--datagrams`` datagrams of ``--size`` payload bytes from one fixed source port to
``--to``, so conntrack sees one flow of exactly ``datagrams * (size + 28)`` bytes (IPv4 20 + UDP 8
header bytes per datagram) and ``datagrams`` packets in the original direction, and none in reply.
``sink`` receives them so the host answers nothing (no ICMP errors). ``hold`` keeps one flow open for a
test to drive: it sends a batch at start and one more on every SIGUSR1 (printing ``batch N sent``), and
exits 0 on SIGTERM. Standard library only: it runs in the kubenetmon image with its Python. It must never
send anywhere but the address it is given.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time

IPV4_UDP_HEADERS = 28
BURST = 50
PAUSE_S = 0.005  # pacing: a veth backlog overrun would drop datagrams before conntrack counts them


def expected_bytes(*, datagrams: int, size: int) -> int:
    return datagrams * (size + IPV4_UDP_HEADERS)


def send(*, to: str, source: str, datagrams: int, size: int) -> None:
    host, port = to.rsplit(":", 1)
    src_host, src_port = source.rsplit(":", 1)
    payload = b"k" * size
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src_host, int(src_port)))
        for i in range(datagrams):
            sock.sendto(payload, (host, int(port)))
            if i % BURST == BURST - 1:
                time.sleep(PAUSE_S)
    print(
        f"sent {datagrams} datagrams of {size} bytes to {to}: "
        f"{expected_bytes(datagrams=datagrams, size=size)} bytes at the IP layer",
        flush=True,
    )


def hold(*, to: str, source: str, datagrams: int, size: int) -> None:
    host, port = to.rsplit(":", 1)
    src_host, src_port = source.rsplit(":", 1)
    payload = b"k" * size
    signals = {signal.SIGUSR1, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # taken with sigwait: none is missed between batches
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src_host, int(src_port)))
        batch = 0
        while True:
            for i in range(datagrams):
                sock.sendto(payload, (host, int(port)))
                if i % BURST == BURST - 1:
                    time.sleep(PAUSE_S)
            batch += 1
            print(f"batch {batch} sent: {datagrams} datagrams of {size} bytes to {to}", flush=True)
            if signal.sigwait(signals) == signal.SIGTERM:
                return


def sink(*, bind: str) -> None:
    host, port = bind.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, int(port)))
        print(f"sink listening on {bind}", flush=True)
        while True:
            sock.recv(65535)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="traffic")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True, help="host:port of the sink")
    s.add_argument("--source", required=True, help="host:port to send from (one flow)")
    s.add_argument("--datagrams", type=int, required=True)
    s.add_argument("--size", type=int, required=True, help="payload bytes per datagram")
    h = sub.add_parser("hold")
    for flag in ("--to", "--source"):
        h.add_argument(flag, required=True)
    h.add_argument("--datagrams", type=int, required=True, help="per batch")
    h.add_argument("--size", type=int, required=True)
    k = sub.add_parser("sink")
    k.add_argument("--bind", required=True, help="host:port to receive on")
    args = parser.parse_args(argv)
    if args.mode == "send":
        send(to=args.to, source=args.source, datagrams=args.datagrams, size=args.size)
    elif args.mode == "hold":
        hold(to=args.to, source=args.source, datagrams=args.datagrams, size=args.size)
    else:
        sink(bind=args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
