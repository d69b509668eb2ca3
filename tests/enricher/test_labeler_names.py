"""remoteDNSName: the agent's name for a remote address, on rows whose remote is outside the cluster only."""

from __future__ import annotations

import ipaddress
from typing import Any

from kubenetmon.enricher.labeler import Labeler
from kubenetmon.shared import schema
from kubenetmon.shared.schema import RawMessage
from tests.enricher.test_labeler import AWS, TABLE, N, cluster
from tests.support.builders import T0, pod, raw_row

P1 = pod("p1", "10.0.0.1", node=N)
P2 = pod("p2", "10.0.0.9", node="n2")


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _label(rows: list[schema.RawRow], names: dict[bytes, str]) -> list[dict[str, Any]]:
    labeler = Labeler(AWS, index=cluster([P1, P2]), ranges=TABLE)
    msg = RawMessage(N, "boot-1", T0, 60, 0, 0, 1, rows, names=names)
    result = labeler.label(msg, enriched_at=1)
    columns = dict(zip(result.columns, result.data, strict=True))
    return [{c: list(v)[i] for c, v in columns.items()} for i in range(result.stats.rows)]


def test_an_outside_remote_gets_its_name_in_both_directions() -> None:
    egress = raw_row("tcp", ("10.0.0.1", 40000, "1.2.3.4", 443), ("1.2.3.4", 443, "10.0.0.1", 40000))
    out, back = _label([egress], {_ip("1.2.3.4"): "api.example.com"})
    assert (out["direction"], out["remoteDNSName"]) == ("out", "api.example.com")
    assert (back["direction"], back["remoteDNSName"]) == ("in", "api.example.com")
    assert (out["bytes"], back["bytes"]) == (11, 13)


def test_ingress_from_a_named_outside_address_is_named_too() -> None:
    ingress = raw_row("tcp", ("1.2.3.4", 5555, "10.0.0.1", 80), ("10.0.0.1", 80, "1.2.3.4", 5555))
    rows = _label([ingress], {_ip("1.2.3.4"): "client.example.net"})
    assert {r["remoteDNSName"] for r in rows} == {"client.example.net"}


def test_a_pod_remote_never_takes_a_dns_name() -> None:
    to_pod = raw_row("tcp", ("10.0.0.1", 40000, "10.0.0.9", 80), ("10.0.0.9", 80, "10.0.0.1", 40000))
    rows = _label([to_pod], {_ip("10.0.0.9"): "forged.example.com", _ip("10.0.0.1"): "me.example.com"})
    assert {r["remoteDNSName"] for r in rows} == {""} and {r["remotePod"] for r in rows} == {"p2"}


def test_unnamed_and_named_rows_side_by_side() -> None:
    named = raw_row("udp", ("10.0.0.1", 1, "1.2.3.4", 2), ("1.2.3.4", 2, "10.0.0.1", 1))
    bare = raw_row("udp", ("10.0.0.1", 3, "5.6.7.8", 4), ("5.6.7.8", 4, "10.0.0.1", 3))
    rows = _label([named, bare], {_ip("1.2.3.4"): "a.example.com"})
    by_ip = {(r["remoteIPv4"], r["direction"]): r["remoteDNSName"] for r in rows}
    assert by_ip == {
        (0x01020304, "out"): "a.example.com",
        (0x01020304, "in"): "a.example.com",
        (0x05060708, "out"): "",
        (0x05060708, "in"): "",
    }


def test_without_names_the_column_is_empty() -> None:
    egress = raw_row("tcp", ("10.0.0.1", 40000, "1.2.3.4", 443), ("1.2.3.4", 443, "10.0.0.1", 40000))
    assert {r["remoteDNSName"] for r in _label([egress], {})} == {""}


def test_the_enriched_message_carries_the_column_through_its_codec() -> None:
    egress = raw_row("tcp", ("10.0.0.1", 40000, "1.2.3.4", 443), ("1.2.3.4", 443, "10.0.0.1", 40000))
    labeler = Labeler(AWS, index=cluster([P1]), ranges=TABLE)
    msg = RawMessage(N, "boot-1", T0, 60, 0, 0, 1, [egress], names={_ip("1.2.3.4"): "api.example.com"})
    raw = schema.decode_raw(schema.encode_raw(msg))
    result = labeler.label(raw, enriched_at=1)
    enriched = schema.EnrichedMessage(raw.msg_id, N, 1, result.columns, result.data)
    back = schema.decode_enriched(schema.encode_enriched(enriched))
    assert back.data[back.columns.index("remoteDNSName")] == ["api.example.com"] * 2
