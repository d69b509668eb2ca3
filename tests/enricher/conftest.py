"""Helpers for the enricher's tests: a cluster inventory, RAW traffic, processes, conditions to wait on."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.shared.options import format_value
from kubenetmon.shared.schema import RawMessage, RawRow
from tests.enricher.builders import T0, message, node, pod, raw_row, service

DEADLINE_S = 30.0
KUBENETMON = [sys.executable, "-m", "kubenetmon.shared.cli"]
DATA = Path(__file__).parent / "data"
RANGE_FILES = tuple(
    str(DATA / n) for n in ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, within: float = DEADLINE_S
) -> None:
    """Wait until ``check()`` is true (polling a condition), failing at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {getattr(check, '__name__', check)}")
        await asyncio.sleep(0.05)


def flags(settings: object) -> list[str]:
    """Command-line flags reproducing ``settings`` (the fields that differ from their defaults)."""
    out: list[str] = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if "flag" in f.metadata and value != f.default:
            out += [f.metadata["flag"], format_value(f.metadata["kind"], value)]
    return out


# ------------------------------------------------------------------------------ a small cluster

NODES = [
    node("n1", "192.168.0.1", zone="us-west-2a", provider_id="aws:///us-west-2a/i-0n1"),
    node("n2", "192.168.0.2", zone="us-west-2b", provider_id="aws:///us-west-2b/i-0n2"),
]
PODS = [
    pod(f"web-{i}", f"10.1.0.{i + 10}", node="n1", labels={"app": "web"}, owner=("StatefulSet", "web"))
    for i in range(4)
] + [
    pod(f"api-{i}", f"10.1.1.{i + 10}", node="n2", labels={"app": "api"}, owner=("StatefulSet", "api"))
    for i in range(4)
]
SERVICES = [service("api", "10.96.0.20")]


@pytest.fixture
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*NODES, *PODS, *SERVICES]}))
    return path


def traffic_row(i: int) -> RawRow:
    """A record seen on n1: web -> api (through the Service), to S3, or a node flow (dropped)."""
    web = f"10.1.0.{10 + i % 4}"
    kind = i % 3
    if kind == 0:
        api = f"10.1.1.{10 + i % 4}"
        return raw_row(
            "tcp",
            (web, 30000 + i, "10.96.0.20", 80),
            (api, 8080, web, 30000 + i),
            orig_counters=(i + 1, 100 * i),
        )
    if kind == 1:
        return raw_row(
            "tcp", (web, 30000 + i, "3.5.140.9", 443), ("3.5.140.9", 443, "192.168.0.1", 30000 + i)
        )
    return raw_row("tcp", ("192.168.0.1", 30000 + i, web, 80), (web, 80, "192.168.0.1", 30000 + i))


def traffic(count: int, rows: int, *, node: str = "n1", seq: int = 0) -> list[RawMessage]:
    return [
        message([traffic_row(j) for j in range(rows)], node=node, start=T0 + 60 * i, seq=seq)
        for i in range(count)
    ]


# -------------------------------------------------------------------------------- processes


class Process:
    """A subprocess with its stderr in a file (JSON log lines), for assertions on what it logged."""

    def __init__(self, argv: list[str], *, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, *, within: float = DEADLINE_S) -> int:
        code = await asyncio.to_thread(self.proc.wait, within)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    procs: list[Process] = []

    def start(*argv: str, name: str = "proc") -> Process:
        proc = Process([*argv], log_path=tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
