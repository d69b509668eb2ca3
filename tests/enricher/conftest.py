"""Helpers for the enricher's tests: a cluster inventory, RAW traffic, processes, conditions to wait on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.shared.schema import RawMessage, RawRow
from tests.enricher.builders import T0, message, node, pod, raw_row, service
from tests.support import KUBENETMON, Process, eventually, flags, spawn  # noqa: F401 (re-exported)

DEADLINE_S = 30.0
DATA = Path(__file__).parent / "data"
RANGE_FILES = tuple(
    str(DATA / n) for n in ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
)


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
