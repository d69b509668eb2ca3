"""``kubenetmon top``: query semantics on chDB with known rows, and what a person reads."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from typing import Any

import pytest

from kubenetmon.cli import main as cli
from kubenetmon.writer.query.top_report import (
    Report,
    Talker,
    TopSpec,
    build_query,
    human_bytes,
    human_rate,
    parse_report,
    render,
    rich_table,
    summary_line,
    title,
    zones_text,
)
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import QueryResult, Sink
from tests.support.rows import flow, insert

NOW = 1_800_000_000
T0, T1, T2 = NOW - 300, NOW - 290, NOW - 20
WEB1 = "shop/web-1@10.1.0.2"
WEB2 = "shop/web-2@10.1.0.3"
DB = "shop/db-0@10.2.0.2"
AGENT = "monitoring/agent-1@fd00:1:2::5"
DB6 = "shop/db-0@fd00:1:2::2"
ZONE_A = {"localAvailabilityZone": "zone-a", "localApp": "web"}
TO_DB = {"remoteApp": "db", "remoteAvailabilityZone": "zone-b", "crossZone": True}


def _rows(start_offset: int = 0) -> list[dict[str, Any]]:
    def at(t: int) -> int:
        return t + start_offset

    first = flow(start=at(T0), local=WEB1, remote=DB, bytes=5000, **ZONE_A, **TO_DB)
    return [
        first,
        dict(first, enrichedAt=2),  # a redelivery: same identity, must not add bytes
        flow(start=at(T2), local=WEB1, remote=DB, bytes=3000, **ZONE_A, **TO_DB),
        flow(start=at(T1), local=WEB2, remote=DB, bytes=2000, remoteService="shop/db", **ZONE_A, **TO_DB),
        flow(start=at(T1), local=WEB1, bytes=4000, connectionClass="PUBLIC_INTERNET", **ZONE_A),
        flow(
            start=at(T2),
            local=WEB1,
            remote="52.1.2.3",
            bytes=6000,
            connectionClass="INTER_REGION",
            remoteCloud="aws",
            remoteCloudService="s3",
            remoteRegion="us-east-1",
            **ZONE_A,
        ),
        flow(
            start=at(T2),
            local=AGENT,
            remote=DB6,
            bytes=1000,
            localApp="agent",
            remoteApp="db",
            localAvailabilityZone="zone-b",
            remoteAvailabilityZone="zone-b",
        ),
        flow(start=at(T2), local=DB, remote=WEB1, bytes=99_999, direction="in", localApp="db"),
        flow(start=at(NOW - 4000), local=WEB1, remote=DB, bytes=77_777, **ZONE_A, **TO_DB),
    ]


@pytest.fixture
def flows(clickhouse: Sink) -> Sink:
    insert(clickhouse, _rows())
    return clickhouse


def _report(sink: Sink, **spec: Any) -> Report:
    top = TopSpec(database=sink.database, view=f"{sink.table}_exact", **spec)
    return parse_report(sink.query(build_query(top, now=NOW)), spec=top, now=NOW)


def _keys(report: Report) -> list[tuple[str, str, str, int]]:
    return [(t.local, t.peer, t.cls, t.bytes) for t in report.rows]


def test_by_app_sums_exactly_sorted_by_bytes(flows: Sink) -> None:
    report = _report(flows)
    assert _keys(report) == [
        ("web", "db", "INTRA_VPC", 10_000),
        ("web", "aws:s3", "INTER_REGION", 6000),
        ("web", "203.0.113.9", "PUBLIC_INTERNET", 4000),
        ("agent", "db", "INTRA_VPC", 1000),
    ]
    assert report.total_bytes == 21_000 and report.groups == 4
    assert (report.window_start, report.window_end, report.seconds) == (T0, T2 + 10, 290)
    assert report.rate(10_000) == pytest.approx(10_000 / 290)
    web_db = report.rows[0]
    assert (web_db.local_zone, web_db.remote_zone, web_db.cross_zone) == ("zone-a", "zone-b", True)
    assert web_db.packets == 5 + 3 + 2


def test_limit_keeps_totals_and_direction_in_is_the_other_side(flows: Sink) -> None:
    top2 = _report(flows, limit=2)
    assert [t.bytes for t in top2.rows] == [10_000, 6000]
    assert (top2.total_bytes, top2.groups, top2.seconds) == (21_000, 4, 290)
    assert _keys(_report(flows, direction="in")) == [("db", "shop/web-1", "INTRA_VPC", 99_999)]
    assert _report(flows, since_s=5).rows == []
    assert _report(flows, since_s=5000).total_bytes == 21_000 + 77_777


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "pod",
            [
                ("shop/web-1", "shop/db-0", "INTRA_VPC", 8000),
                ("shop/web-1", "aws:s3", "INTER_REGION", 6000),
                ("shop/web-1", "203.0.113.9", "PUBLIC_INTERNET", 4000),
                ("shop/web-2", "shop/db-0", "INTRA_VPC", 2000),
                ("monitoring/agent-1", "shop/db-0", "INTRA_VPC", 1000),
            ],
        ),
        (
            "namespace",
            [
                ("shop", "shop", "INTRA_VPC", 10_000),
                ("shop", "aws:s3", "INTER_REGION", 6000),
                ("shop", "(outside)", "PUBLIC_INTERNET", 4000),
                ("monitoring", "shop", "INTRA_VPC", 1000),
            ],
        ),
        (
            "service",
            [
                ("web", "db", "INTRA_VPC", 8000),
                ("web", "aws:s3", "INTER_REGION", 6000),
                ("web", "203.0.113.9", "PUBLIC_INTERNET", 4000),
                ("web", "svc shop/db", "INTRA_VPC", 2000),
                ("agent", "db", "INTRA_VPC", 1000),
            ],
        ),
        (
            "class",
            [
                ("", "", "INTRA_VPC", 10_000),
                ("", "aws s3 us-east-1", "INTER_REGION", 6000),
                ("", "", "PUBLIC_INTERNET", 4000),
                ("", "", "INTRA_VPC", 1000),
            ],
        ),
        (
            "zone",
            [
                ("", "", "INTRA_VPC", 10_000),
                ("", "", "INTER_REGION", 6000),
                ("", "", "PUBLIC_INTERNET", 4000),
                ("", "", "INTRA_VPC", 1000),
            ],
        ),
    ],
)
def test_groupings(flows: Sink, by: str, expected: list[tuple[str, str, str, int]]) -> None:
    report = _report(flows, by=by)
    assert _keys(report) == expected
    assert report.total_bytes == 21_000
    if by == "zone":
        assert [zones_text(t) for t in report.rows] == [
            "zone-a -> zone-b (cross-zone)",
            "zone-a",
            "zone-a",
            "zone-b",
        ]
    if by == "class":
        assert [t.cross_zone for t in report.rows] == [True, False, False, False]


def test_units() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 1234, 12_345, 999_499, 999_500, 5 * 10**9)] == [
        "0 B",
        "999 B",
        "1.00 KB",
        "1.23 KB",
        "12.3 KB",
        "999 KB",
        "1.00 MB",
        "5.00 GB",
    ]
    assert human_rate(2048) == "2.05 KB/s"


def _fixed_report() -> Report:
    rows = [
        Talker("web", "db", "INTRA_VPC", "z1", "z2", True, 1_500_000, 1200),
        Talker("agent", "203.0.113.9", "PUBLIC_INTERNET", "z2", "", False, 2500, 7),
    ]
    return Report(
        spec=TopSpec(),
        now=NOW,
        rows=rows,
        window_start=NOW - 100,
        window_end=NOW,
        total_bytes=1_502_500,
        groups=2,
    )


def test_table_is_aligned_with_units() -> None:
    out = io.StringIO()
    render(_fixed_report(), fmt="table", out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("top talkers by app, out, last 10m: 1.50 MB in 100s (15.0 KB/s), ")
    assert lines[0].endswith("2 of 2 rows")
    assert lines[1:] == [
        "LOCAL  PEER         CLASS            ZONES                    BYTES    BYTES/S  PACKETS  SHARE",
        "web    db           INTRA_VPC        z1 -> z2 (cross-zone)  1.50 MB  15.0 KB/s    1,200  99.8%",
        "agent  203.0.113.9  PUBLIC_INTERNET  z2                     2.50 KB     25 B/s        7   0.2%",
    ]
    empty = io.StringIO()
    render(Report(spec=TopSpec(since_s=3600), now=NOW, rows=[]), fmt="table", out=empty)
    assert empty.getvalue() == "top talkers by app, out, last 1h: no traffic\n"
    assert summary_line(_fixed_report()).endswith(
        "| web -> db INTRA_VPC 1.50 MB; agent -> 203.0.113.9 PUBLIC_INTERNET 2.50 KB"
    )


def test_json_and_csv_keep_numbers() -> None:
    out = io.StringIO()
    render(_fixed_report(), fmt="json", out=out)
    doc = json.loads(out.getvalue())
    assert doc["total_bytes"] == 1_502_500 and doc["window_seconds"] == 100
    assert doc["rows"][0] == {
        "local": "web",
        "peer": "db",
        "class": "INTRA_VPC",
        "local_zone": "z1",
        "remote_zone": "z2",
        "cross_zone": True,
        "bytes": 1_500_000,
        "bytes_per_s": 15_000.0,
        "packets": 1200,
    }
    out = io.StringIO()
    render(_fixed_report(), fmt="csv", out=out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed[1]["peer"] == "203.0.113.9" and parsed[1]["bytes"] == "2500"


def test_empty_result_parses() -> None:
    spec = TopSpec()
    assert parse_report(QueryResult(["local"], []), spec=spec, now=NOW).rows == []


def test_command_reads_the_exact_view(
    clickhouse: Sink, chdb_settings: ClickHouseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    shift = int(time.time()) - NOW  # the command reads "now" from the clock: move the rows there
    insert(clickhouse, _rows(start_offset=shift))
    argv = ["top", "--clickhouse-dsn", chdb_settings.dsn, "--database", clickhouse.database]
    assert cli.main([*argv, "--format", "json", "--limit", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["local"], r["peer"], r["bytes"]) for r in doc["rows"]] == [
        ("web", "db", 10_000),
        ("web", "aws:s3", 6000),
        ("web", "203.0.113.9", 4000),
    ]
    assert doc["total_bytes"] == 21_000 and doc["groups"] == 4
    assert cli.main([*argv, "--by", "pod", "--direction", "in"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["LOCAL", "PEER", "CLASS", "BYTES", "BYTES/S", "PACKETS", "SHARE"]
    assert table[2].split()[:4] == ["shop/db-0", "shop/web-1", "INTRA_VPC", "100"]
    assert cli.main([*argv, "--by", "class"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["CLASS", "CLOUD", "ZONES", "BYTES", "BYTES/S", "PACKETS", "SHARE"]
    assert table[2].split()[:3] == ["INTRA_VPC", "cross-zone", "10.0"]
    assert cli.main([*argv, "--since", "nonsense"]) == 2
    assert "not a duration" in capsys.readouterr().err


def test_header_shows_the_windows_completeness(
    clickhouse: Sink, chdb_settings: ClickHouseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    shift = int(time.time()) - NOW
    insert(clickhouse, _rows(start_offset=shift))  # flows metered by a node that has no ledger at all
    argv = ["top", "--clickhouse-dsn", chdb_settings.dsn, "--database", clickhouse.database]
    assert cli.main(argv) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("top talkers by app, out, last 10m [0 of ")
    assert " node-intervals complete; " in head and " silent " in head and "not judged" not in head
    fixed = _fixed_report()
    assert title(dataclasses.replace(fixed, completeness="9 of 9 node-intervals complete")).startswith(
        "top talkers by app, out, last 10m [9 of 9 node-intervals complete]: 1.50 MB"
    )


def _demo_like_report() -> Report:
    """Rows as long as the demo's: pods, cloud services, zone pairs, the cost column."""
    rows = [
        Talker(
            f"shop/frontend-7d9c5b6f4-x{i}z",
            "aws:s3" if i % 2 else f"shop/api-5f6d8c7b9-k{i}q",
            "INTRA_VPC" if i % 2 == 0 else "INTRA_REGION",
            "us-east-1a",
            "us-east-1b" if i % 2 == 0 else "",
            i % 2 == 0,
            780_000 - i * 1000,
            73 + i,
            cost_usd=0.0000073,
        )
        for i in range(9)
    ]
    spec = TopSpec(by="pod", cost=True)
    total = sum(t.bytes for t in rows)
    return Report(
        spec=spec, now=NOW, rows=rows, window_start=NOW - 40, window_end=NOW, total_bytes=total, groups=9
    )


def test_the_live_view_keeps_each_row_on_one_line_at_80_columns() -> None:
    from rich.console import Console

    report = _demo_like_report()
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    console.print(rich_table(report, width=80))
    lines = out.getvalue().splitlines()
    table = [line for line in lines if line.startswith(("LOCAL", "shop/"))]
    assert len(table) == 1 + len(report.rows), out.getvalue()  # a header and one line per row
    assert all(len(line) <= 80 for line in lines)
    assert table[0].split() == ["LOCAL", "PEER", "CLASS", "BYTES", "SHARE", "COST"]
    assert table[1].rstrip().endswith("$0.0000073")  # the cost column is never cut, never reads as zero
    wide = io.StringIO()
    Console(file=wide, width=200, color_system=None).print(rich_table(report, width=200))
    assert "PACKETS" in wide.getvalue() and "ZONES" in wide.getvalue()
