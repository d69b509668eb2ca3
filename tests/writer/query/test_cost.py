"""Cost: flows priced by the loaded book through the real migrations and the cost view, in chDB.

Every expected figure is computed by hand from the shipped list prices (USD per GiB), so a change to the
view, the who-pays rule or a shipped price shows up here.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.writer import pricebook
from kubenetmon.writer.cost_tables import PRICES_TABLE, cost_view
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.query.cost import CostSpec, build_query, parse_report
from kubenetmon.writer.query.top_report import TopSpec
from kubenetmon.writer.query.top_report import build_query as build_top
from kubenetmon.writer.query.top_report import parse_report as parse_report_top
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink
from tests.support import KUBENETMON

GIB = 1 << 30
NOV = "2026-11-02 10:00:00"
DEFAULTS: dict[str, Any] = {
    "intervalStartTime": NOV,
    "intervalSeconds": 60,
    "connectionClass": "INTRA_VPC",
    "crossZone": False,
    "direction": "out",
    "localCloud": "aws",
    "localRegion": "us-east-1",
    "remoteRegion": "us-east-1",
    "localNamespace": "shop",
    "localApp": "web",
    "observerNode": "node-a",
    "enrichedAt": 1,
}


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "\\'") + "'"


def insert(sink: Sink, flows: dict[int, dict[str, Any]]) -> None:
    """Rows keyed by ``flowId``; ``gib`` is their bytes in GiB, everything else a column."""
    rows = []
    for fid, values in flows.items():
        row = {**DEFAULTS, **values, "flowId": fid}
        row["bytes"] = int(row.pop("gib") * GIB)
        rows.append(row)
    for row in rows:  # one statement each: rows set different columns
        names, values = ", ".join(row), ", ".join(_literal(v) for v in row.values())
        sink.command(f"INSERT INTO {sink.database}.{sink.table} ({names}) VALUES ({values})")


def costs(sink: Sink, where: str = "1") -> dict[int, tuple[str, str, float]]:
    """``flowId -> (costCharge, costEntry, costUSD)``."""
    rows = sink.query(
        f"SELECT flowId, costCharge, costEntry, costUSD FROM {sink.database}.{cost_view(sink.table)} "
        f"WHERE {where} ORDER BY flowId"
    ).rows
    return {int(r[0]): (str(r[1]), str(r[2]), float(r[3])) for r in rows}


def usd(sink: Sink) -> dict[int, float]:
    return {fid: round(c[2], 9) for fid, c in costs(sink).items()}


def _cz(**values: Any) -> dict[str, Any]:
    return {"crossZone": True, "localAvailabilityZone": "a", "remoteAvailabilityZone": "b", **values}


def test_every_class_costs_its_list_price_for_the_local_side_and_direction(clickhouse: Sink) -> None:
    inter = {"connectionClass": "INTER_REGION"}
    gcp = {"localCloud": "gcp", "localRegion": "us-east1", "remoteRegion": "us-east1"}
    insert(
        clickhouse,
        {
            1: {"gib": 10},
            2: {"gib": 10, "direction": "in"},
            3: _cz(gib=10),
            4: _cz(gib=5, direction="in"),
            5: {"gib": 2, "connectionClass": "INTRA_REGION", "remoteCloudService": "ec2"},
            6: {"gib": 2, "connectionClass": "INTRA_REGION", "remoteCloudService": "ec2", "direction": "in"},
            13: {"gib": 2, "connectionClass": "INTRA_REGION", "remoteCloudService": "s3"},  # S3: free
            7: {"gib": 3, **inter, "remoteRegion": "eu-west-1"},
            8: {"gib": 3, **inter, "remoteRegion": "us-east-2"},
            9: {"gib": 3, **inter, "remoteRegion": "eu-west-1", "direction": "in"},
            10: {"gib": 50, "connectionClass": "PUBLIC_INTERNET", "remoteRegion": "", "direction": "in"},
            11: {"gib": 1, "connectionClass": "UNKNOWN"},
            12: _cz(gib=1, localCloud="other"),
            # gcp: cross-zone is billed on egress only; inter-region by continent
            21: _cz(gib=10, **gcp),
            22: _cz(gib=10, **gcp, direction="in"),
            23: {"gib": 4, **inter, **gcp, "remoteRegion": "us-west1"},
            24: {"gib": 4, **inter, **gcp, "remoteRegion": "europe-west1"},
            25: {"gib": 3, **gcp, "connectionClass": "INTRA_REGION", "remoteCloudService": "googlecloud"},
            26: {"gib": 3, **gcp, "connectionClass": "INTRA_REGION", "remoteCloudService": "googleservice"},
            # azure: no cross-zone charge, inter-region egress
            31: _cz(gib=10, localCloud="azure", localRegion="eastus"),
            32: {"gib": 4, **inter, "localCloud": "azure", "localRegion": "eastus", "remoteRegion": "westus"},
        },
    )
    got = costs(clickhouse)
    assert got[1] == ("same-zone", "aws-same-zone", 0.0) and got[2] == ("same-zone", "aws-same-zone", 0.0)
    assert got[3][:2] == ("cross-zone", "aws-cross-zone")
    assert got[8][1] == "aws-inter-region-us-east-1-us-east-2"  # the specific pair beats the wildcard
    assert (got[5][1], got[13][1]) == ("aws-intra-region-ec2", "aws-intra-region")  # by remote service
    assert got[11] == ("", "", 0.0) and got[12] == ("cross-zone", "", 0.0)  # unpriced, not guessed
    assert usd(clickhouse) == pytest.approx(
        {
            1: 0,
            2: 0,
            3: 0.10,
            4: 0.05,
            5: 0.02,
            6: 0.02,
            7: 0.06,
            8: 0.03,
            9: 0,
            10: 0,
            11: 0,
            12: 0,
            13: 0,
            21: 0.10,
            22: 0,
            23: 0.08,
            24: 0.20,
            25: 0.03,
            26: 0,
            31: 0,
            32: 0.08,
        }
    )


def test_internet_egress_tiers_are_blended_over_each_month_of_each_cloud(clickhouse: Sink) -> None:
    net = {"connectionClass": "PUBLIC_INTERNET", "remoteRegion": ""}
    insert(
        clickhouse,
        {
            1: {"gib": 5000, **net, "localNamespace": "shop"},
            2: {"gib": 7000, **net, "localNamespace": "media", "intervalStartTime": "2026-11-20 00:00:00"},
            3: {"gib": 50, **net, "intervalStartTime": "2026-12-01 00:00:00"},  # a new month: free tier again
            4: {"gib": 2048, **net, "localCloud": "gcp", "localRegion": "us-east1"},
        },
    )
    november = 100 * 0 + (10240 - 100) * 0.09 + (12000 - 10240) * 0.085  # AWS: 12000 GiB in the month
    got = usd(clickhouse)
    assert got[1] + got[2] == pytest.approx(november)
    assert got[1] == pytest.approx(november * 5000 / 12000) and got[2] == pytest.approx(
        november * 7000 / 12000
    )
    assert got[3] == 0
    assert got[4] == pytest.approx(1024 * 0.12 + 1024 * 0.11)  # GCP tiers, its own volume
    # a window holding only part of the month still prices at the whole month's blended rate
    assert costs(clickhouse, "intervalStartTime >= '2026-11-10 00:00:00' AND localCloud = 'aws'")[2][2] == (
        pytest.approx(got[2])
    )


def test_a_flow_seen_by_both_nodes_is_charged_once_per_side(clickhouse: Sink) -> None:
    """Pod a (zone a, node-a) sends 6 GiB to pod b (zone b, node-b) and gets 2 GiB back; both nodes see it."""
    a = {
        "observerNode": "node-a",
        "localApp": "a",
        "localAvailabilityZone": "a",
        "remoteAvailabilityZone": "b",
    }
    b = {
        "observerNode": "node-b",
        "localApp": "b",
        "localAvailabilityZone": "b",
        "remoteAvailabilityZone": "a",
    }
    insert(
        clickhouse,
        {
            1: {**a, "crossZone": True, "direction": "out", "gib": 6},  # a's egress
            2: {**a, "crossZone": True, "direction": "in", "gib": 2},  # a's ingress
            3: {**b, "crossZone": True, "direction": "out", "gib": 2},  # b's egress
            4: {**b, "crossZone": True, "direction": "in", "gib": 6},  # b's ingress
            5: {"localApp": "c", "direction": "out", "gib": 9},  # within one node: seen once, same zone
        },
    )
    # AWS bills cross-zone bytes on both sides: 8 GiB crossed, each GiB once out of one side and once in
    assert sum(usd(clickhouse).values()) == pytest.approx(0.01 * (6 + 2) * 2)
    spec = CostSpec(
        by="app", since_s=10 * 365 * 86400, database=clickhouse.database, view="network_flows_0_cost"
    )
    report = parse_report(clickhouse.query(build_query(spec, now=1.8e9)), spec=spec)
    by_app = {r["key"]: r["cost_usd"] for r in report.rows}
    assert by_app == pytest.approx({"a": 0.06 + 0.02, "b": 0.02 + 0.06, "c": 0.0})
    assert report.total_usd == pytest.approx(0.16) and report.groups == 3
    # GCP bills egress only: the same flow costs each GiB once
    clickhouse.command(f"ALTER TABLE {clickhouse.database}.{clickhouse.table} UPDATE localCloud = 'gcp', "
                       "localRegion = 'us-east1' WHERE 1 SETTINGS mutations_sync = 2")  # fmt: skip
    assert sum(usd(clickhouse).values()) == pytest.approx(0.01 * (6 + 2))


def _override(tmp_path: Path, text: str) -> pricebook.PriceBook:
    path = tmp_path / "contract.yaml"
    path.write_text(text)
    return pricebook.load([str(path)])


def _migrate(sink: Sink, book: pricebook.PriceBook | None) -> bool:
    out = migrate(sink, database=sink.database, table=sink.table, ttl_days=90, price_book=book)
    return out.prices_changed


def test_overrides_and_corrected_books_reprice_the_past(clickhouse: Sink, tmp_path: Path) -> None:
    net = {"connectionClass": "PUBLIC_INTERNET", "remoteRegion": ""}
    insert(
        clickhouse,
        {
            1: _cz(gib=10),
            2: {"gib": 10, **net},  # within AWS's free 100 GiB
            3: _cz(gib=10, localCloud="onprem", localRegion="dc1"),
        },
    )
    assert usd(clickhouse) == pytest.approx({1: 0.10, 2: 0, 3: 0})
    contract = _override(
        tmp_path,
        """
entries:
  - {id: aws-cross-zone, out: 0.005}
  - {id: aws-nat-gateway, enabled: true}
  - {id: onprem-cross-zone, cloud: onprem, charge: cross-zone, from: dc1, out: 0.002,
     source: 'https://example.com/contract', effective: 2026-01-01}
""",
    )
    assert _migrate(clickhouse, contract)
    assert usd(clickhouse) == pytest.approx({1: 0.05, 2: 10 * 0.045, 3: 0.02})
    assert not _migrate(clickhouse, contract)  # the same book again: nothing to do
    assert not _migrate(clickhouse, None)  # a writer starting up keeps the book an operator loaded
    assert usd(clickhouse) == pytest.approx({1: 0.05, 2: 0.45, 3: 0.02})
    assert _migrate(clickhouse, pricebook.load())  # back to list prices: the past is re-priced
    assert usd(clickhouse) == pytest.approx({1: 0.10, 2: 0, 3: 0})
    loads = clickhouse.query(
        f"SELECT argMax(book, loadedAt), uniqExact(entry) FROM {clickhouse.database}.{PRICES_TABLE} "
        f"WHERE loadedAt = (SELECT max(loadedAt) FROM {clickhouse.database}.{PRICES_TABLE})"
    ).rows[0]
    assert loads == (pricebook.load().digest, len(pricebook.load().entries))


def test_the_cli_loads_a_contract_reports_cost_and_refuses_a_bad_book(
    chdb_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    sink = Sink(chdb_settings)
    try:
        migrate(sink, database=sink.database, table=sink.table, ttl_days=90)
        insert(
            sink,
            {1: _cz(gib=10, intervalStartTime=int(time.time()) - 600), 2: _cz(gib=4, localNamespace="db")},
        )
    finally:
        sink.close()
    target = ["--clickhouse-dsn", chdb_settings.dsn]
    bad = tmp_path / "bad.yaml"
    bad.write_text("entries:\n  - {id: aws-cross-zone, out: -0.01}\n")
    refused = subprocess.run(
        [*KUBENETMON, "clickhouse", "migrate", *target, "--price-book", str(bad)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        f"kubenetmon clickhouse: {bad}: entry aws-cross-zone: field out: "
        "expected USD per GiB, a number from 0, got -0.01\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text("entries:\n  - {id: aws-cross-zone, out: 0.02}\n")
    loaded = subprocess.run(
        [*KUBENETMON, "clickhouse", "migrate", *target, "--price-book", str(good)],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0 and "loaded" in loaded.stdout, loaded.stderr
    report = subprocess.run(
        [*KUBENETMON, "cost", *target, "--since", "1d", "--format", "json"], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    # only the row of the last day is in the window: 10 GiB at the contracted 0.02
    assert doc["total_usd"] == pytest.approx(0.2) and [r["key"] for r in doc["rows"]] == ["shop"]
    table = subprocess.run([*KUBENETMON, "cost", *target, "--since", "1d"], capture_output=True, text=True)
    assert table.stdout.splitlines()[0].endswith(": $0.20 (1 of 1 rows)")


def test_top_cost_adds_what_each_row_costs(clickhouse: Sink, capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time())
    net = {
        "connectionClass": "PUBLIC_INTERNET",
        "remoteRegion": "",
        "remoteIPv4": "203.0.113.9",
        "ipFamily": 4,
    }
    insert(
        clickhouse,
        {
            1: _cz(gib=10, intervalStartTime=now - 300, remoteApp="db"),
            2: _cz(gib=5, intervalStartTime=now - 300, remoteApp="db", direction="in"),
            3: {"gib": 160, "intervalStartTime": now - 300, "localApp": "api", **net},
        },
    )
    spec = TopSpec(database=clickhouse.database, view=cost_view(clickhouse.table), cost=True, since_s=3600)
    report = parse_report_top(clickhouse.query(build_top(spec, now=now)), spec=spec, now=now)
    assert [(t.local, t.peer, t.cost_usd) for t in report.rows] == [
        ("api", "203.0.113.9", pytest.approx((160 - 100) * 0.09)),  # out only: this month's egress
        ("web", "db", pytest.approx(0.10)),
    ]
    argv = ["top", "--clickhouse-dsn", f"chdb://{clickhouse.target.path}", "--cost", "--since", "1h"]
    clickhouse.close()  # the command opens the directory itself
    assert cli.main([*argv, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["local"], r["cost_usd"]) for r in rows] == [("api", pytest.approx(5.4)), ("web", 0.1)]
    assert cli.main([*argv, "--direction", "in"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[-1] == "COST" and table[2].split()[-1] == "$0.05"
    assert cli.main([*argv, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(",packets,cost_usd")


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("namespace", {"shop": 0.10 + 0.05, "(not a pod)": 0.0}),
        ("app", {"web": 0.10, "shop/api-0": 0.05, "(not a pod)": 0.0}),
        ("workload", {"shop/Deployment/web": 0.10, "shop/api-0": 0.05, "(not a pod)": 0.0}),
        ("class", {"cross-zone": 0.15, "unpriced UNKNOWN": 0.0}),
        ("zone-pair", {"a -> b": 0.10, "b -> a": 0.05, "? -> ?": 0.0}),
    ],
)
def test_cost_groupings(clickhouse: Sink, by: str, expected: dict[str, float]) -> None:
    insert(
        clickhouse,
        {
            1: _cz(gib=10, localWorkloadKind="Deployment", localWorkload="web", localPod="web-1"),
            2: _cz(
                gib=5, localApp="", localPod="api-0", localAvailabilityZone="b", remoteAvailabilityZone="a"
            ),
            3: {"gib": 1, "connectionClass": "UNKNOWN", "localNamespace": "", "localApp": ""},
        },
    )
    spec = CostSpec(
        by=by, since_s=10 * 365 * 86400, database=clickhouse.database, view="network_flows_0_cost"
    )
    report = parse_report(clickhouse.query(build_query(spec, now=1.8e9)), spec=spec)
    assert {r["key"]: r["cost_usd"] for r in report.rows} == pytest.approx(expected)
    assert report.unpriced_bytes == GIB and report.total_usd == pytest.approx(0.15)
    assert list(report.rows[0]) == ["key", "cost_usd", "out_bytes", "in_bytes", "unpriced_bytes"]


def test_cost_command_refuses_bad_flags(
    chdb_settings: ClickHouseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cost", "--clickhouse-dsn", chdb_settings.dsn]
    assert cli.main([*argv, "--since", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert cli.main([*argv, "--limit", "0"]) == 2
    assert capsys.readouterr().err == "kubenetmon cost: --limit: expected a positive number of rows, got 0\n"
