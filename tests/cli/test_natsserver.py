"""Ports for local servers: a port is handed out once per process and once among the live processes of
the machine, so servers started from separate calls or by parallel test workers never try to listen on the
same one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import free_port, free_ports


def test_no_port_is_handed_out_twice_across_calls() -> None:
    # The kernel offers a released port again readily; a few hundred calls see it happen without the
    # record of ports already given.
    ports = [free_port() for _ in range(200)] + free_ports(50) + free_ports(50)
    assert len(set(ports)) == len(ports)


def test_a_handed_out_port_is_free_to_bind() -> None:
    for port in free_ports(3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_no_port_is_handed_out_to_two_live_processes() -> None:
    # Parallel test workers each start servers: the machine-wide record keeps their ports apart, and a
    # process's ports stay its own while it lives (a server restarting on its port finds it free).
    script = (
        "import sys; from kubenetmon.cli.natsserver import free_ports;"
        "print(*free_ports(100), flush=True); sys.stdin.read()"
    )
    others = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    try:
        ports = [int(p) for proc in others for p in (proc.stdout.readline() if proc.stdout else "").split()]
        ports += free_ports(100)
    finally:
        for proc in others:
            proc.communicate("", timeout=30)
    assert len(ports) == 400 and len(set(ports)) == len(ports)


def test_ports_come_from_below_the_ephemeral_range() -> None:
    # Nothing else (a bind to port 0, an outgoing connection) gets such a port from the kernel.
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if first_ephemeral - 20000 < 1000:
        pytest.skip(f"the ephemeral range starts at {first_ephemeral}: ports come from bind(0)")
    assert all(20000 <= port < first_ephemeral for port in free_ports(20))
