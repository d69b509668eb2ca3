"""The enricher tests' small cluster (``NODES``, ``PODS``, ``SERVICES``), the cloud range files, RAW traffic
seen on n1, and a ``Labeler`` over them as the enricher builds it."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.shared.schema import RawMessage, RawRow
from tests.support.builders import T0, message, node, pod, raw_row, service

DEADLINE_S = 30.0
DATA = Path(__file__).parents[1] / "enricher" / "data"
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
SETTINGS = LabelSettings(cloud="aws", region="us-west-2", cluster="test", environment="ci")


def make_labeler(inventory_file: Path) -> Labeler:
    index = Index()
    inventory.load(index, inventory_file)
    table = sources.load_table(sources.RangeSettings(sources=RANGE_FILES), private=SETTINGS.private)
    return Labeler(SETTINGS, index=index, ranges=table)


def traffic_row(i: int) -> RawRow:
    """A record seen on n1: web -> api (through the Service), to S3, or another node's flow to web
    (dropped on n1: n2's agent meters it as a node row)."""
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
    return raw_row("tcp", ("192.168.0.2", 30000 + i, web, 80), (web, 80, "192.168.0.2", 30000 + i))


def traffic(count: int, rows: int, *, node: str = "n1", seq: int = 0) -> list[RawMessage]:
    return [
        message([traffic_row(j) for j in range(rows)], node=node, start=T0 + 60 * i, seq=seq)
        for i in range(count)
    ]
