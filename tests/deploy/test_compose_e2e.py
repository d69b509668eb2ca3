"""End to end against the running compose stack: the bytes the traffic generator sent are in ClickHouse,
exactly, once.

Opt-in (``pytest -m compose``; deselected by default). Needs ``docker compose up -d --build --wait``
first and ``KUBENETMON_TEST_CLICKHOUSE_URL`` (e.g. ``http://kubenetmon:compose-clickhouse@127.0.0.1:8123``).
The expected numbers come from the traffic-source service in ``compose.yaml``: one UDP flow of
``datagrams`` datagrams of ``size`` payload bytes, i.e. ``datagrams * (size + 28)`` bytes at the IP
layer, all in the original direction. This also exercises the writer against a ClickHouse server.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.compose import TrafficPlan, traffic_plan

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 300.0
VIEW = "kubenetmon.network_flows_0_exact"


def query(url: str, sql: str) -> list[dict[str, Any]]:
    """Run ``sql`` on the ClickHouse server at ``url`` (HTTP interface, credentials in the URL)."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.hostname}:{parts.port or 8123}/?default_format=JSONEachRow",
        data=sql.encode(),
        method="POST",
    )
    if parts.username:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clickhouse_url() -> str:
    url = os.environ.get("KUBENETMON_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.fail(
            "KUBENETMON_TEST_CLICKHOUSE_URL is not set: start the compose stack and point it at ClickHouse"
        )
    return url


def flow_totals(url: str, plan: TrafficPlan) -> dict[str, int]:
    rows = query(
        url,
        f"""SELECT direction, sum(bytes) AS bytes, sum(packets) AS packets, count() AS rows,
                   uniqExact(intervalStartTime, observerNode, flowId) AS identities
            FROM {VIEW}
            WHERE proto = 'UDP' AND localPod = 'traffic-source' AND localPort = {plan.source_port}
              AND remotePort = {plan.sink_port}
            GROUP BY direction""",
    )
    totals = {
        f"{r['direction']}_{k}": int(r[k]) for r in rows for k in ("bytes", "packets", "rows", "identities")
    }
    return {"out_bytes": 0, "out_packets": 0, "in_bytes": 0, "in_packets": 0, **totals}


@pytest.mark.compose
def test_traffic_totals_are_exact(clickhouse_url: str) -> None:
    plan = traffic_plan()
    deadline = time.monotonic() + DEADLINE_S
    totals = flow_totals(clickhouse_url, plan)
    while totals["out_bytes"] < plan.bytes and time.monotonic() < deadline:
        time.sleep(2)  # polling the server for a condition, with a deadline
        totals = flow_totals(clickhouse_url, plan)
    assert totals["out_bytes"] == plan.bytes, totals
    assert totals["out_packets"] == plan.datagrams, totals
    assert totals["in_bytes"] == 0 and totals["in_packets"] == 0, totals
    assert totals["out_rows"] == totals["out_identities"], "a row identity appears twice"


@pytest.mark.compose
def test_flow_is_labelled_from_the_inventory(clickhouse_url: str) -> None:
    plan = traffic_plan()
    rows = query(
        clickhouse_url,
        f"""SELECT DISTINCT localNamespace, localPod, localNode, observerNode, connectionClass, environment
            FROM {VIEW}
            WHERE proto = 'UDP' AND localPod = 'traffic-source' AND remotePort = {plan.sink_port}""",
    )
    assert rows == [
        {
            "localNamespace": "traffic",
            "localPod": "traffic-source",
            "localNode": "compose-node",
            "observerNode": "compose-node",
            "connectionClass": "INTRA_VPC",
            "environment": "compose",
        }
    ]
