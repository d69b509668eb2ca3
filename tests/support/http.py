"""A role's HTTP endpoints as the tests read them: ``/metrics``, ``/healthz``, ``/readyz`` on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request


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
