"""``top --by domain`` and ``cost --by domain``: outside peers grouped by the DNS name the agent saw, and a
table migrated from before the column (schema 6) reads the same rows with empty names."""

from __future__ import annotations

from typing import Any

from kubenetmon.writer import migrate as migrations
from kubenetmon.writer.query.cost import CostSpec
from kubenetmon.writer.query.cost import build_query as cost_query
from kubenetmon.writer.query.cost import parse_report as cost_report
from kubenetmon.writer.query.top_report import TopSpec, build_query, parse_report
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink
from tests.support.rows import flow, insert

NOW = 1_800_000_000
WEB = "shop/web-1@10.1.0.2"
API = "shop/api-0@10.1.0.5"
INTERNET = {"connectionClass": "PUBLIC_INTERNET", "localApp": "web"}


def _rows() -> list[dict[str, Any]]:
    t = NOW - 100
    return [
        flow(
            start=t, local=WEB, remote="203.0.113.7", bytes=5000, remoteDNSName="api.example.com", **INTERNET
        ),
        flow(
            start=t, local=WEB, remote="203.0.113.8", bytes=2000, remoteDNSName="api.example.com", **INTERNET
        ),
        flow(
            start=t, local=WEB, remote="198.51.100.1", bytes=3000, remoteDNSName="cdn.example.net", **INTERNET
        ),
        flow(start=t, local=WEB, remote="198.51.100.9", bytes=700, **INTERNET),  # no name: its address
        flow(start=t, local=WEB, remote=API, bytes=400, localApp="web", remoteApp="api"),
    ]


def test_top_by_domain_groups_outside_peers_by_name(clickhouse: Sink) -> None:
    insert(clickhouse, _rows())
    spec = TopSpec(by="domain", database=clickhouse.database, view=f"{clickhouse.table}_exact")
    report = parse_report(clickhouse.query(build_query(spec, now=NOW)), spec=spec, now=NOW)
    assert [(t.local, t.peer, t.bytes) for t in report.rows] == [
        ("web", "api.example.com", 7000),
        ("web", "cdn.example.net", 3000),
        ("web", "198.51.100.9", 700),
        ("web", "api", 400),
    ]


def test_cost_by_domain_names_the_peer_or_says_why_not(clickhouse: Sink) -> None:
    insert(clickhouse, _rows())
    spec = CostSpec(by="domain", since_s=3600, database=clickhouse.database, view="network_flows_0_cost")
    report = cost_report(clickhouse.query(cost_query(spec, now=NOW)), spec=spec)
    assert {r["key"]: r["out_bytes"] for r in report.rows} == {
        "api.example.com": 7000,
        "cdn.example.net": 3000,
        "(no name)": 700,
        "(in cluster)": 400,
    }


def test_a_table_from_before_the_column_gains_it_empty(chdb_settings: ClickHouseSettings) -> None:
    sink = Sink(chdb_settings)
    try:
        migrations.migrate(sink, database=sink.database, table=sink.table, ttl_days=0, to_version=6)
        sink.command(
            f"INSERT INTO {sink.database}.{sink.table} (intervalStartTime, observerNode, flowId, bytes, "
            f"direction) VALUES ({NOW}, 'node-a', 1, 1234, 'out')"
        )
        assert "remoteDNSName" not in [
            r[0] for r in sink.query(f"DESCRIBE {sink.database}.{sink.table}").rows
        ]
        out = migrations.migrate(sink, database=sink.database, table=sink.table, ttl_days=0)
        assert out.applied == (7, 8, 9)  # 8: the ledger's timestamps column; 9: its rejected column
        got = sink.query(f"SELECT bytes, remoteDNSName FROM {sink.database}.{sink.table}_exact").rows
        assert [tuple(r) for r in got] == [(1234, "")]
        cost = sink.query(f"SELECT remoteDNSName FROM {sink.database}.{sink.table}_cost").rows
        assert [tuple(r) for r in cost] == [("",)]
    finally:
        sink.close()
