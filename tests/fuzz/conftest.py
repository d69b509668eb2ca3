"""The pipeline for bad-input tests: a nats-server that takes big messages, a running enricher and writer.

The server accepts payloads up to 16 MiB (twice the decoders' 8 MiB limit), so messages the decoders
refuse as ``oversized`` can still be published. The enricher and the writer are the real
``kubenetmon`` commands (supervisor + one worker each), with ``/metrics`` on a free loopback port.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.settings import ClickHouseSettings
from tests.enricher.conftest import KUBENETMON, NODES, PODS, RANGE_FILES, SERVICES, Process, flags
from tests.fixtures.nats import nats_settings_for

SERVER_MAX_PAYLOAD = 16 * 1024 * 1024


@dataclass
class Role:
    """A running ``kubenetmon enricher|writer``: its process, log, and metrics port."""

    name: str
    proc: Process

    def port(self) -> int | None:
        for record in self.proc.records():
            if str(record.get("msg", "")).startswith("serving /metrics"):
                return int(record["port"])
        return None

    def get(self, path: str) -> tuple[int, str]:
        port = self.port()
        if port is None:
            return 0, ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if re.match(rf"^{re.escape(name)}(\{{| )", line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def pids(self) -> set[int]:
        """The supervisor and every process below it."""
        out, frontier = set(), [self.proc.proc.pid]
        while frontier:
            pid = frontier.pop()
            out.add(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            frontier += [int(c) for c in children]
        return out


@pytest.fixture
def big_nats(make_nats_server: Callable[..., NatsServer], tmp_path: Path) -> NatsServer:
    conf = tmp_path / "big.conf"
    conf.write_text(f"max_payload: {SERVER_MAX_PAYLOAD}\n")
    return make_nats_server(extra_args=("-c", str(conf)))


@pytest.fixture
def fuzz_nats(big_nats: NatsServer) -> NatsSettings:
    return nats_settings_for(big_nats, ack_wait_s=15.0, max_deliver=5, backoff_s=(0.1, 0.5, 1.0))


@pytest.fixture
async def broker_for_fuzz(fuzz_nats: NatsSettings) -> AsyncIterator[Broker]:
    async with await Broker.connect(fuzz_nats, name="fuzz", wait_s=5) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        yield broker


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*NODES, *PODS, *SERVICES]}))
    return path


@pytest.fixture
def start_role(tmp_path: Path) -> Iterator[Callable[..., Role]]:
    roles: list[Role] = []

    def start(name: str, *argv: str) -> Role:
        common = ["--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json"]
        proc = Process([*KUBENETMON, name, *argv, *common], log_path=tmp_path / f"{name}-{len(roles)}.log")
        roles.append(Role(name, proc))
        return roles[-1]

    yield start
    for role in roles:
        role.proc.kill()


def enricher_args(nats: NatsSettings, inventory: Path) -> list[str]:
    return [
        *flags(nats),
        "--inventory",
        str(inventory),
        "--ranges",
        ",".join(RANGE_FILES),
        "--cloud",
        "aws",
        "--region",
        "us-west-2",
        "--cluster",
        "fuzz",
        "--environment",
        "ci",
        "--batch",
        "64",
        "--fetch-timeout",
        "200ms",
    ]


def writer_args(nats: NatsSettings, clickhouse: ClickHouseSettings) -> list[str]:
    return [*flags(nats), *flags(clickhouse), "--batch-age", "300ms", "--fetch-size", "200"]


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
