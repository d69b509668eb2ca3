"""The Grafana dashboard: it parses, its ClickHouse panels read the exact view of the table the writer
creates (the cost panels its cost view), and every panel's SQL runs on a migrated chDB table (created by
``kubenetmon clickhouse migrate``, queried by ``kubenetmon sql``) and returns the totals of rows whose
bytes are known. Prometheus panels and the alert rules name only metrics that the code defines.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.writer.cost_tables import cost_view
from kubenetmon.writer.flow_tables import REPORTS_TABLE, exact_view, node_table
from kubenetmon.writer.query.completeness import SETTLE_S
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import DEFAULT_DATABASE
from tests.support.commands import kubenetmon

# meant to keep the module on one worker so its chDB store is filled once (docs/testing.md: open)
pytestmark = pytest.mark.xdist_group("dashboard-chdb")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s/base/grafana/kubenetmon-dashboard.json"
ALERTS = ROOT / "k8s/components/monitoring/alerts.yaml"
CLICKHOUSE = "grafana-clickhouse-datasource"
NOW = int(time.time())
RANGE = (NOW - 6 * 3600, NOW)
INTERVAL_S = 60
START = (NOW - 1800) // 60 * 60  # an interval half an hour ago, minute-aligned


def table_default() -> str:
    return next(f.default for f in dataclasses.fields(ClickHouseSettings) if f.name == "table")  # type: ignore[return-value]


VIEW = f"{DEFAULT_DATABASE}.{exact_view(table_default())}"
LEDGER = f"{DEFAULT_DATABASE}.{exact_view(REPORTS_TABLE)}"
COMPLETENESS = "Completeness (agents' ledger)"
COVERAGE = "Source coverage (agents' ledger)"
NODES = "Nodes' own traffic (not pods)"
NODE_VIEW = f"{DEFAULT_DATABASE}.{exact_view(node_table(table_default()))}"
TABLE = f"{DEFAULT_DATABASE}.{table_default()}"
COST_VIEW = f"{DEFAULT_DATABASE}.{cost_view(table_default())}"
GIB = 1 << 30

# (environment, direction, class, localNamespace, localWorkload, remoteNamespace, remoteWorkload,
#  remoteIPv4, localZone, remoteZone, crossZone, bytes)
ROWS = [
    ("prod", "out", "INTRA_VPC", "shop", "web", "shop", "api", "10.0.0.2", "a", "b", True, 1000),
    ("prod", "in", "INTRA_VPC", "shop", "web", "shop", "api", "10.0.0.2", "a", "b", True, 500),
    ("prod", "out", "PUBLIC_INTERNET", "shop", "web", "", "", "1.2.3.4", "a", "", False, 300),
    ("prod", "out", "INTER_REGION", "data", "db", "", "", "52.1.2.3", "a", "", False, 200),
]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        result += panel.get("panels", []) if panel["type"] == "row" else [panel]
    return result


def clickhouse_targets() -> list[tuple[str, str]]:
    return [
        (p["title"], t["rawSql"])
        for p in panels()
        for t in p["targets"]
        if t["datasource"]["type"] == CLICKHOUSE
    ]


def expand(sql: str, *, namespace: str = ".*", environment: str = ".*", interval_s: int = INTERVAL_S) -> str:
    """What the ClickHouse data source sends: its macros and the dashboard's variables filled in."""
    start, end = RANGE

    def date(ts: int) -> str:
        return f"toDate('{datetime.fromtimestamp(ts, UTC):%Y-%m-%d}')"

    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    sql = re.sub(r"\$__dateFilter\((\w+)\)", rf"\1 >= {date(start)} AND \1 <= {date(end)}", sql)
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)", sql
    )
    sql = sql.replace("$__interval_s", str(interval_s))
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    sql = sql.replace("${namespace:regex}", namespace).replace("${environment:regex}", environment)
    assert not re.search(r"\$(__|\{|[a-z])", sql), f"unexpanded macro or variable in:\n{sql}"
    return sql


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A chDB directory migrated by the real command, holding ``ROWS``."""
    dsn = f"chdb://{tmp_path_factory.mktemp('dashboard')}/clickhouse"
    run("clickhouse", "migrate", "--clickhouse-dsn", dsn)
    values = ",\n".join(
        f"({START}, {INTERVAL_S}, '{env}', 'TCP', '{cls}', '{direction}', '{lns}', '{lwl}', 'Deployment', "
        f"'{lns}-{lwl}-0', '{rns}', '{rwl}', toIPv4('{rip}'), '{lz}', '{rz}', {str(cz).lower()}, {nbytes}, "
        f"{nbytes // 100}, 'node-a', 4, {i}, {(START + INTERVAL_S + 5) * 10**9}, 'src/{i}', 'aws')"
        for i, (env, direction, cls, lns, lwl, rns, rwl, rip, lz, rz, cz, nbytes) in enumerate(ROWS)
    )
    run(
        "sql",
        "--write",
        "--clickhouse-dsn",
        dsn,
        f"INSERT INTO {TABLE} (intervalStartTime, intervalSeconds, environment, proto, connectionClass, "
        "direction, localNamespace, localWorkload, localWorkloadKind, localPod, remoteNamespace, "
        "remoteWorkload, remoteIPv4, localAvailabilityZone, remoteAvailabilityZone, crossZone, bytes, "
        f"packets, observerNode, ipFamily, flowId, enrichedAt, sourceId, localCloud) VALUES {values}",
    )
    # the ledger: node-a's report whole, node-b's missing one of two chunks, node-c's whole but lossy
    # link and boundary bytes: node-a seen whole, node-b blind, node-c not measured (an older agent)
    reports = [
        ("node-a", 0, 1, 0, 1_000_000, 990_000),
        ("node-b", 0, 2, 0, 4_000_000, 400_000),
        ("node-c", 0, 1, 3, -1, 0),
    ]
    run(
        "sql",
        "--write",
        "--clickhouse-dsn",
        dsn,
        f"INSERT INTO {DEFAULT_DATABASE}.{REPORTS_TABLE} (sourceId, node, boot, intervalStartTime, "
        "intervalSeconds, seq, chunk, chunks, spanFromMs, spanToMs, eventsLost, linkBytes, boundaryBytes) "
        "VALUES "
        + ", ".join(
            f"('{node}/b/{START}/1/{chunk}', '{node}', 'b', {START}, {INTERVAL_S}, 1, {chunk}, {chunks}, "
            f"{START * 1000}, {(START + INTERVAL_S) * 1000}, {lost}, {link}, {bound})"
            for node, chunk, chunks, lost, link, bound in reports
        ),
    )
    run(
        "sql",
        "--write",
        "--clickhouse-dsn",
        dsn,
        f"INSERT INTO {NODE_VIEW.removesuffix('_exact')} (intervalStartTime, intervalSeconds, direction, "
        "localNode, connectionClass, bytes, observerNode, flowId, enrichedAt, sourceId, localKind) VALUES "
        f"({START}, {INTERVAL_S}, 'out', 'node-a', 'PUBLIC_INTERNET', 7000, 'node-a', 1, 1, 's', 'node'), "
        f"({START}, {INTERVAL_S}, 'in', 'node-a', 'PUBLIC_INTERNET', 9000, 'node-a', 2, 1, 's', 'node')",
    )
    yield dsn


def run(*argv: str) -> str:
    out = kubenetmon(*argv, timeout=120)
    assert out.returncode == 0, f"kubenetmon {argv[0]}: {out.stderr}"
    return out.stdout


@functools.cache
def _query(dsn: str, sql: str) -> str:
    return run("sql", "--clickhouse-dsn", dsn, "--format", "json", sql)


def query(dsn: str, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` through ``kubenetmon sql`` (cached: the data never changes within this module)."""
    rows: list[dict[str, Any]] = json.loads(_query(dsn, sql) or "[]")
    return rows


def panel_sql(title: str) -> str:
    (sql,) = [s for t, s in clickhouse_targets() if t == title]
    return sql


def test_dashboard_parses_and_is_provisionable() -> None:
    board = dashboard()
    assert board["uid"] == "kubenetmon-flows" and board["title"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[:2] == ["datasource", "prometheus"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in ("${datasource}", "${prometheus}"), panel["title"]


def test_clickhouse_panels_read_the_exact_view() -> None:
    targets = clickhouse_targets()
    assert len(targets) >= 10
    for title, sql in targets:
        tables = set(re.findall(r"\bFROM\s+([\w.]+)", sql))
        if title in (COMPLETENESS, COVERAGE):
            assert tables == {LEDGER}, f"{title}: reads {tables}"
        elif title == NODES:
            assert tables == {NODE_VIEW}, f"{title}: reads {tables}"
        else:
            assert tables in ({VIEW}, {COST_VIEW}), f"{title}: reads {tables}"


def test_every_panel_query_runs(chdb: str) -> None:
    for _title, sql in clickhouse_targets():
        query(chdb, expand(sql))  # raises with ClickHouse's message if it fails
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert query(chdb, variable["query"]), variable["name"]


@pytest.mark.parametrize(
    ("title", "namespace", "expected"),
    [
        ("All traffic", ".*", 1500),
        ("All traffic", "shop", 1300),
        ("Internet egress", ".*", 300),
        ("Cross-region", ".*", 200),
        ("Cross-zone", ".*", 1000),
    ],
)
def test_totals(chdb: str, title: str, namespace: str, expected: int) -> None:
    assert query(chdb, expand(panel_sql(title), namespace=namespace)) == [{"bytes": expected}]


def test_series_add_up_to_the_totals(chdb: str) -> None:
    sent = query(chdb, expand(panel_sql("Bytes sent by workload (top 10)")))
    assert {(r["workload"], r["bytes"]) for r in sent} == {("shop/web", 1300), ("data/db", 200)}
    received = query(chdb, expand(panel_sql("Bytes received by workload (top 10)")))
    assert [(r["workload"], r["bytes"]) for r in received] == [("shop/web", 500)]
    by_class = query(chdb, expand(panel_sql("Bytes sent by connection class")))
    assert {r["class"]: r["bytes"] for r in by_class} == {
        "INTRA_VPC": 1000,
        "PUBLIC_INTERNET": 300,
        "INTER_REGION": 200,
    }


def test_zone_pairs_and_top_talkers(chdb: str) -> None:
    zones = query(chdb, expand(panel_sql("Bytes sent by zone pair")))
    assert zones[0] == {"from_zone": "a", "to_zone": "b", "cross_zone": True, "bytes": 1000}
    talkers = query(chdb, expand(panel_sql("Top talkers")))
    assert talkers[0]["workload"] == "shop/web" and talkers[0]["remote"] == "shop/api"
    assert (talkers[0]["sent"], talkers[0]["received"], talkers[0]["total"]) == (1000, 500, 1500)
    assert {t["remote"] for t in talkers} == {"shop/api", "1.2.3.4", "52.1.2.3"}


def test_cost_panels(chdb: str) -> None:
    """Shipped AWS list prices: cross-zone $0.01/GiB each side, inter-region egress $0.02/GiB, and the
    month's 300 B of internet egress inside the free 100 GiB."""
    shop, data = (1000 + 500) * 0.01 / GIB, 200 * 0.02 / GIB
    by_namespace = query(chdb, expand(panel_sql("Cost by namespace")))
    assert [(r["namespace"], r["sent_bytes"]) for r in by_namespace] == [("shop", 1300), ("data", 200)]
    assert [r["cost_usd"] for r in by_namespace] == pytest.approx([shop, data])
    by_app = query(chdb, expand(panel_sql("Cost by app")))
    assert {r["app"]: r["cost_usd"] for r in by_app} == pytest.approx({"web": shop, "db": data})
    (pair,) = query(chdb, expand(panel_sql("Top cross-zone pairs by cost")))
    assert (pair["workload"], pair["remote"], pair["zones"], pair["crossing_bytes"]) == (
        "shop/web",
        "shop/api",
        "a -> b",
        1500,
    )
    assert pair["cost_usd"] == pytest.approx(shop)
    daily = query(chdb, expand(panel_sql("Daily cost by charge")))
    assert {r["charge"]: r["cost_usd"] for r in daily} == pytest.approx(
        {"cross-zone": shop, "internet": 0.0, "inter-region": data}
    )


def test_pipeline_panels(chdb: str) -> None:
    lag = query(chdb, expand(panel_sql("Enrichment lag")))
    assert [round(r["max_lag"]) for r in lag] == [5]
    rows = query(chdb, expand(panel_sql("Rows stored per observer node")))
    assert [(r["node"], r["rows"]) for r in rows] == [("node-a", len(ROWS))]
    (fresh,) = query(chdb, expand(panel_sql("Data freshness")))
    since_collection = time.time() - NOW  # NOW was taken when the module was imported, maybe minutes ago
    assert 1700 <= fresh["freshness"] <= 1800 + 120 + since_collection


def test_coverage_and_node_panels(chdb: str) -> None:
    rows = query(chdb, expand(panel_sql(COVERAGE)))
    assert [(r["node"], round(r["coverage"], 2)) for r in rows] == [("node-a", 0.99), ("node-b", 0.1)]
    rows = query(chdb, expand(panel_sql(NODES)))
    assert [(r["line"], r["bytes"]) for r in rows] == [("node:node-a PUBLIC_INTERNET", 7000)]


def test_completeness_panel(chdb: str) -> None:
    rows = query(chdb, expand(panel_sql(COMPLETENESS)))
    assert [(r["nodes_known"], r["nodes_reporting"], r["nodes_whole"]) for r in rows] == [(3, 3, 1)]


# ---- Prometheus side: panels and alerts may only name metrics the code defines


def defined_metrics() -> set[str]:
    """Sample names of every metric registered by importing all kubenetmon modules (in a child process)."""
    script = """
import importlib, pkgutil, json, kubenetmon
from prometheus_client import REGISTRY
for mod in pkgutil.walk_packages(kubenetmon.__path__, "kubenetmon."):
    try:
        importlib.import_module(mod.name)
    except ImportError:
        pass
names = set()
suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count"]}
for family in REGISTRY.collect():
    for suffix in suffixes.get(family.type, [""]):
        names.add(family.name + suffix)
print(json.dumps(sorted(n for n in names if n.startswith("kubenetmon_"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout))


def referenced_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\bkubenetmon_[a-z0-9_]+", expression))


def prometheus_expressions() -> list[tuple[str, str]]:
    found = [
        (p["title"], t["expr"])
        for p in panels()
        for t in p["targets"]
        if t["datasource"]["type"] == "prometheus"
    ]
    rules = yaml.safe_load(ALERTS.read_text())
    found += [(r["alert"], r["expr"]) for g in rules["spec"]["groups"] for r in g["rules"]]
    return found


def test_prometheus_panels_and_alerts_name_defined_metrics() -> None:
    defined = defined_metrics()
    assert defined, "no kubenetmon metrics found"
    expressions = prometheus_expressions()
    assert expressions
    for title, expr in expressions:
        names = referenced_metrics(expr)
        assert names, f"{title}: references no kubenetmon metric"
        assert names <= defined, f"{title}: unknown {sorted(names - defined)}"


def test_the_completeness_panel_shows_settled_intervals_only() -> None:
    """The dashboard's notion of settled is ``check``'s and ``top``'s (``completeness.SETTLE_S``)."""
    text = DASHBOARD.read_text()
    settled = f"intervalStartTime + intervalSeconds <= now() - INTERVAL {SETTLE_S} SECOND"
    assert text.count(REPORTS_TABLE) == text.count(settled) >= 2  # every panel reading the ledger
