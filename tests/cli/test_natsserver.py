"""Ports for local servers: a port is handed out once per process, so servers started from separate
calls never try to listen on the same one."""

from __future__ import annotations

import socket

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
