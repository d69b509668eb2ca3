"""The pipeline for bad-input tests: a running enricher and writer (``Role``) and their command lines.

The enricher and the writer are the real ``kubenetmon`` commands (supervisor + one worker each), with
``/metrics`` on a free loopback port; the server they use takes payloads up to ``SERVER_MAX_PAYLOAD``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.settings import ClickHouseSettings
from tests.support import http
from tests.support.commands import flags
from tests.support.enricher import RANGE_FILES
from tests.support.processes import Process, descendants, http_port

SERVER_MAX_PAYLOAD = 16 * 1024 * 1024


@dataclass
class Role:
    """A running ``kubenetmon enricher|writer``: its process, log, and metrics port."""

    name: str
    proc: Process

    def port(self) -> int | None:
        return http_port(self.proc)

    def get(self, path: str) -> tuple[int, str]:
        port = self.port()
        if port is None:
            return 0, ""
        try:
            return http.get(port, path)
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        return http.by_name(text).get(name, 0.0)

    def pids(self) -> set[int]:
        """The supervisor and every process below it."""
        return {self.proc.proc.pid} | {pid for pid, _ in descendants(self.proc.proc.pid)}


def enricher_args(nats: NatsSettings, inventory: Path) -> list[str]:
    return [
        *flags(nats),
        # the cases' times are fixed (around 1.8e9): neither ahead of the clock nor expired, whatever the date
        "--max-clock-skew",
        "3650d",
        "--ttl-days",
        "0",
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
