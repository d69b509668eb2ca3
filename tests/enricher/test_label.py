"""``kubenetmon label``: conntrack dump JSON lines in, the enricher's rows out (same code path)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubenetmon.enricher import inventory, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.label_tool import parse_record
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.shared import schema
from tests.support import KUBENETMON
from tests.support.builders import T0
from tests.support.enricher import RANGE_FILES, traffic_row

FLAGS = ["--cloud", "aws", "--region", "us-west-2", "--cluster", "test", "--environment", "ci"]


def dump_record(row: schema.RawRow, **extra: Any) -> dict[str, Any]:
    """A record as ``kubenetmon conntrack dump --format json`` prints it."""
    text = {
        k: str(ipaddress.ip_address(getattr(row, k)))
        for k in ("orig_src", "orig_dst", "reply_src", "reply_dst")
    }
    return {
        "id": 1234,
        "zone": row.zone,
        "proto": {6: "tcp", 17: "udp"}.get(row.proto, row.proto),
        "family": "ipv4" if row.family == 2 else "ipv6",
        **text,
        **{k: getattr(row, k) for k in ("orig_sport", "orig_dport", "reply_sport", "reply_dport")},
        **{k: getattr(row, k) for k in ("orig_packets", "orig_bytes", "reply_packets", "reply_bytes")},
        "state": "ESTABLISHED",
        "mark": 0,
        **extra,
    }


def as_clickhouse_shows(column: str, value: Any) -> Any:
    if column == "intervalStartTime":
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    if column.endswith("IPv4"):
        return str(ipaddress.IPv4Address(value))
    if isinstance(value, bytes):
        mapped = ipaddress.IPv6Address(value).ipv4_mapped
        return f"::ffff:{mapped}" if mapped else str(ipaddress.IPv6Address(value))
    return value


def label(inventory_file: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*KUBENETMON, "label", "--inventory", str(inventory_file), "--node", "n1", *args]
    return subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)


def test_gives_exactly_the_enrichers_rows(inventory_file: Path) -> None:
    rows = [traffic_row(i) for i in range(12)]
    lines = [json.dumps(dump_record(r, interval_start=T0, interval_seconds=60)) for r in rows]
    done = label(inventory_file, lines, *FLAGS, "--ranges", ",".join(RANGE_FILES))
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]

    index = Index()
    inventory.load(index, inventory_file)
    settings = LabelSettings(cloud="aws", region="us-west-2", cluster="test", environment="ci")
    labeler = Labeler(
        settings,
        index=index,
        ranges=sources.load_table(sources.RangeSettings(sources=RANGE_FILES), private=settings.private),
    )
    msg = schema.RawMessage(
        node="n1", boot="label", start=T0, seconds=60, seq=0, chunk=0, chunks=1, rows=rows
    )
    expected = labeler.label(msg, enriched_at=0)
    n = expected.stats.rows // 2
    assert len(printed) == 2 * n == 16  # 4 of the 12 records are node flows
    for k, row in enumerate(printed):
        j = k // 2 + (n if k % 2 else 0)  # out, in, out, in ...
        assert list(row) == list(schema.COLUMN_NAMES)
        for c, column in enumerate(expected.columns):
            value = expected.data[c][j]
            if column == "enrichedAt":
                continue
            assert row[column] == as_clickhouse_shows(column, value), column
    assert printed[0]["intervalStartTime"] == "2023-11-14 22:13:20"
    assert printed[0]["localIP"].startswith("::ffff:10.1.0.")
    dropped = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert dropped == [{"line": i + 1, "dropped": "node"} for i in range(2, 12, 3)]


def test_numbers_and_names_ipv6_and_invalid_lines(inventory_file: Path) -> None:
    v6 = {
        "proto": 17, "family": 10, "orig_src": "fd00::1", "orig_dst": "2600:1f14:4000::9", "orig_sport": 5353,
        "orig_dport": 53, "reply_src": "2600:1f14:4000::9", "reply_dst": "fd00::1", "reply_sport": 53,
        "reply_dport": 5353, "orig_packets": 1, "orig_bytes": 80, "reply_packets": 1, "reply_bytes": 120,
    }  # fmt: skip
    lines = [
        "not json",
        json.dumps({**v6, "orig_src": "300.1.1.1"}),
        json.dumps(v6),
        "",
        json.dumps({**v6, "family": 2}),
    ]
    done = label(inventory_file, lines, *FLAGS)
    assert done.returncode == 1
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["line"] for e in errors if "invalid" in e] == [1, 2, 5]
    assert [e for e in errors if "dropped" in e] == [
        {"line": 3, "dropped": "direction"}
    ]  # unknown both sides
    assert done.stdout == ""
    assert parse_record(v6).family == schema.AF_INET6
    assert parse_record({**v6, "proto": "UDP", "family": "inet6"}) == parse_record(v6)


def test_ignore_udp_and_required_inventory(inventory_file: Path, tmp_path: Path) -> None:
    udp = traffic_row(0)._replace(proto=17)
    done = label(inventory_file, [json.dumps(dump_record(udp))], *FLAGS, "--ignore-udp")
    assert done.returncode == 0 and done.stdout == ""
    assert '"dropped": "udp"' in done.stderr
    missing = subprocess.run(
        [*KUBENETMON, "label", "--node", "n1"], input="", capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "--inventory" in missing.stderr


def test_loopback_records_are_dropped_as_loopback(inventory_file: Path) -> None:
    lo = {
        "proto": 6, "family": 2, "orig_src": "127.0.0.1", "orig_dst": "127.0.0.1", "orig_sport": 40000,
        "orig_dport": 8080, "reply_src": "127.0.0.1", "reply_dst": "127.0.0.1", "reply_sport": 8080,
        "reply_dport": 40000, "orig_packets": 3, "orig_bytes": 180, "reply_packets": 2, "reply_bytes": 120,
    }  # fmt: skip
    v6 = {**lo, "family": 10, "orig_src": "::1", "orig_dst": "::1", "reply_src": "::1", "reply_dst": "::1"}
    done = label(inventory_file, [json.dumps(lo), json.dumps(v6)], *FLAGS)
    dropped = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert dropped == [{"line": 1, "dropped": "loopback"}, {"line": 2, "dropped": "loopback"}]
