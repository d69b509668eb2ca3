"""What the compose stack's traffic-source service sends, read from ``compose.yaml`` (the expected bytes
of the compose end-to-end test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from tests.deploy.compose.traffic import expected_bytes

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TrafficPlan:
    source_ip: str
    source_port: int
    sink_ip: str
    sink_port: int
    datagrams: int
    size: int

    @property
    def bytes(self) -> int:
        return expected_bytes(datagrams=self.datagrams, size=self.size)


def traffic_plan() -> TrafficPlan:
    """What the traffic-source service of compose.yaml sends."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    flags = dict(
        a.removeprefix("--").split("=", 1) for a in compose["services"]["traffic-source"]["command"][1:]
    )
    source_ip, source_port = flags["source"].rsplit(":", 1)
    sink_ip, sink_port = flags["to"].rsplit(":", 1)
    return TrafficPlan(
        source_ip=source_ip,
        source_port=int(source_port),
        sink_ip=sink_ip,
        sink_port=int(sink_port),
        datagrams=int(flags["datagrams"]),
        size=int(flags["size"]),
    )
