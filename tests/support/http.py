"""A role's HTTP endpoints as the tests read them: ``/metrics``, ``/healthz``, ``/readyz`` on loopback; and a
port nobody listens on (``closed_port``)."""

from __future__ import annotations

import contextlib
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where connections are refused while the block runs: bound here but never listening,
    so no other process (a parallel test worker's server) can take it meanwhile, as it could a port that was
    bound and released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def get(port: int, path: str, *, timeout: float = 10) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:PORT/PATH``; an HTTP error is its status and body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition, by its full name (labels included)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def by_name(text: str) -> dict[str, float]:
    """Every metric of a Prometheus text exposition, its samples summed over their labels."""
    out: dict[str, float] = {}
    for sample, value in samples(text).items():
        name = sample.partition("{")[0]
        out[name] = out.get(name, 0.0) + value
    return out
