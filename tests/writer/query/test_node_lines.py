"""``top`` and ``cost`` read the node rows with the pod rows: a node's own traffic is its own line."""

from __future__ import annotations

from kubenetmon.writer.query import cost
from kubenetmon.writer.query.top_report import TopSpec, build_query, parse_report
from kubenetmon.writer.sink import Sink
from tests.support.rows import flow, insert, insert_nodes

NOW = 1_800_000_000
T = NOW - 120
SPEC = TopSpec(since_s=600, view="network_flows_0_exact", nodes_view="network_flows_0_node_exact")


def _fill(sink: Sink) -> None:
    insert(sink, [flow(start=T, local="shop/web-1@10.1.0.2", bytes=5000, localApp="web", localNode="n1")])
    insert_nodes(
        sink,
        [
            flow(start=T, local="@10.0.0.1", bytes=7000, localNode="n1", connectionClass="PUBLIC_INTERNET"),
            flow(
                start=T,
                local="ingress/ingress-7@10.0.0.1",
                bytes=3000,
                localNode="n1",
                localApp="ingress",
                connectionClass="PUBLIC_INTERNET",
            ),
        ],
    )


def test_top_shows_the_nodes_traffic_as_its_own_lines(clickhouse: Sink) -> None:
    _fill(clickhouse)
    for by, expected in (
        ("app", [("node:n1", 7000), ("web", 5000), ("node:n1/ingress", 3000)]),
        ("pod", [("node:n1", 7000), ("shop/web-1", 5000), ("node:n1/ingress/ingress-7", 3000)]),
        ("class", [("nodes", 10_000), ("", 5000)]),
    ):
        spec = TopSpec(by=by, since_s=600, view=SPEC.view, nodes_view=SPEC.nodes_view)
        report = parse_report(clickhouse.query(build_query(spec, now=NOW)), spec=spec, now=NOW)
        assert [(t.local, t.bytes) for t in report.rows] == expected, by
        assert report.total_bytes == 15_000


def test_without_the_node_view_top_reads_pod_rows_only(clickhouse: Sink) -> None:
    _fill(clickhouse)
    spec = TopSpec(since_s=600)
    report = parse_report(clickhouse.query(build_query(spec, now=NOW)), spec=spec, now=NOW)
    assert [(t.local, t.bytes) for t in report.rows] == [("web", 5000)]


def test_cost_shows_the_nodes_traffic_as_its_own_lines(clickhouse: Sink) -> None:
    _fill(clickhouse)
    spec = cost.CostSpec(by="app", since_s=600, nodes_view="network_flows_0_node_cost")
    report = cost.parse_report(clickhouse.query(cost.build_query(spec, now=NOW)), spec=spec)
    keys = {r["key"]: r["out_bytes"] for r in report.rows}
    assert keys == {"node:n1": 7000, "node:n1/ingress": 3000, "web": 5000}
    by_class = cost.CostSpec(by="class", since_s=600, nodes_view="network_flows_0_node_cost")
    rows = cost.parse_report(clickhouse.query(cost.build_query(by_class, now=NOW)), spec=by_class).rows
    assert {r["key"] for r in rows} == {"node: internet", "same-zone"}
