"""The metadata history, pure: compact records keep what attribution reads, the recorder records each
change once, and the history index answers with the pod as it was during the interval."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.history import HistoryIndex, Record, Recorder, compact, decode, encode
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.objects import Pod, node_info, service_ips
from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema import COLUMN_NAMES
from tests.support.builders import T0, message, node, pod, raw_row, service

X = "10.1.5.5"


def _full_pod(**kwargs: Any) -> dict[str, Any]:
    obj = pod("job-1", ["10.1.2.3", "fd00::3"], node="n1", owner=("Job", "backup-28000000"), **kwargs)
    obj["metadata"]["annotations"] = {"big": "x" * 1000}
    obj["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    obj["status"].setdefault("containerStatuses", []).append({"name": "side", "state": {"running": {}}})
    return obj


@pytest.mark.parametrize("phase", ["Running", "Succeeded"])
def test_a_compact_pod_is_attributed_exactly_like_the_full_object(phase: str) -> None:
    full = _full_pod(labels={"k8s-app": "backup", "x": "y"}, phase=phase, finished=T0 + 30)
    small = compact("pods", full)
    a, b = Pod(full, now=T0 + 99), Pod(small, now=T0 + 99)
    assert {s: getattr(a, s) for s in Pod.__slots__} == {s: getattr(b, s) for s in Pod.__slots__}
    assert "annotations" not in small["metadata"] and "conditions" not in small["status"]
    assert len(encode(Record("pods", "MODIFIED", 1.0, small, "id"))) < 500  # the 1 KB annotation is gone


def test_compact_nodes_and_services_keep_addresses_zone_instance_and_ports() -> None:
    n = node("n1", "192.168.0.1", zone="z1", external="198.51.100.1", provider_id="aws:///z1/i-1")
    assert node_info(compact("nodes", n)) == node_info(n)
    s = service("web", ["10.96.0.20", "fd00:96::20"], node_ports=(30080, 30443))
    assert service_ips(compact("services", s)) == service_ips(s)


def test_records_round_trip_and_garbage_is_a_decode_error() -> None:
    record = Record("pods", "DELETED", 1700000000.25, compact("pods", pod("a", X, node="n1")), "meta/x")
    assert decode(encode(record)) == record
    for bad in (b"\xc1", b"\x80", encode(record).replace(b"DELETED", b"EXPLODE")):
        with pytest.raises(DecodeError):
            decode(bad)


def test_the_recorder_records_each_change_once() -> None:
    recorder = Recorder()
    a, b = pod("a", "10.1.0.1", node="n1"), pod("b", "10.1.0.2", node="n1")
    first = recorder.observe("pods", "LISTED", [a, b], at=10.0)
    assert [(r.event, r.obj.get("keys")) for r in first] == [
        ("MODIFIED", None),
        ("MODIFIED", None),
        ("LISTED", ["uid-default-a", "uid-default-b"]),
    ]
    assert [r.event for r in recorder.observe("pods", "LISTED", [a, b], at=20.0)] == ["LISTED"]
    heartbeat = {**a, "status": {**a["status"], "conditions": [{"type": "Ready"}]}}
    assert recorder.observe("pods", "MODIFIED", [heartbeat], at=30.0) == []
    relabelled = pod("a", "10.1.0.1", node="n1", labels={"app": "new"})
    assert [
        r.obj["metadata"]["labels"] for r in recorder.observe("pods", "MODIFIED", [relabelled], at=40.0)
    ] == [{"app": "new"}]
    # b vanished while the watch was down: the relist records its end
    gone = recorder.observe("pods", "LISTED", [relabelled], at=50.0)
    assert [(r.event, r.obj.get("metadata", {}).get("name")) for r in gone] == [
        ("DELETED", "b"),
        ("LISTED", None),
    ]
    # ids are deterministic: another recorder seeing the same change makes the same id
    other = Recorder().observe("pods", "LISTED", [a, b], at=11.0)
    assert [r.msg_id for r in other[:2]] == [r.msg_id for r in first[:2]]
    snap = recorder.snapshot(at=60.0, period=7)
    assert [(r.kind, r.event) for r in snap] == [
        ("pods", "MODIFIED"),
        ("pods", "LISTED"),
        ("nodes", "LISTED"),
        ("services", "LISTED"),
    ]
    assert snap[0].msg_id.startswith("meta/snap/7/pods/uid-default-a/")


def _history(records: list[tuple[str, str, float, dict[str, Any]]]) -> HistoryIndex:
    index = HistoryIndex(grace_seconds=900)
    recorder = Recorder()
    for kind, event, at, obj in records:
        for record in recorder.observe(kind, event, [obj] if event != "LISTED" else obj["items"], at=at):
            index.record(decode(encode(record)))
    return index


def _listed(*objs: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(objs)}


def test_an_ip_reused_by_two_pods_maps_by_time() -> None:
    a = pod("a", X, node="n1", created=T0 - 7200)
    b = pod("b", X, node="n2", created=T0 + 700)
    index = _history(
        [
            ("pods", "LISTED", T0 - 7000, _listed(a)),
            ("pods", "DELETED", T0 + 600, a),
            ("pods", "ADDED", T0 + 701, b),
        ]
    )
    ip = ipaddress.ip_address(X).packed
    assert index.pod_at(ip, T0, T0 + 60).name == "a"  # type: ignore[union-attr]
    assert index.pod_at(ip, T0 + 1200, T0 + 1260).name == "b"  # type: ignore[union-attr]
    assert index.pod_at(ip, T0 - 9000, T0 - 8940) is None  # before either existed


def test_labels_are_those_of_the_interval_and_a_missed_delete_is_closed_by_a_list() -> None:
    v1 = pod("a", X, node="n1", labels={"app": "old"}, created=T0 - 7200)
    v2 = pod("a", X, node="n1", labels={"app": "new"}, created=T0 - 7200)
    index = _history(
        [
            ("pods", "LISTED", T0 - 7000, _listed(v1)),
            ("pods", "MODIFIED", T0 + 300, v2),
            ("pods", "LISTED", T0 + 3000, _listed()),  # deleted while nobody watched
        ]
    )
    ip = ipaddress.ip_address(X).packed
    assert index.pod_at(ip, T0, T0 + 60).app == "old"  # type: ignore[union-attr]
    assert index.pod_at(ip, T0 + 240, T0 + 300).app == "old"  # type: ignore[union-attr]
    assert index.pod_at(ip, T0 + 600, T0 + 660).app == "new"  # type: ignore[union-attr]
    assert index.pod_at(ip, T0 + 3000 + 900, T0 + 3960) is None  # ended at the list, grace over


def test_a_list_recorded_late_does_not_end_a_pod_recorded_after_it() -> None:
    index = HistoryIndex()
    b = compact("pods", pod("b", X, node="n1", created=T0))
    index.record(Record("pods", "ADDED", T0 + 10, b, "1"))
    index.record(Record("pods", "LISTED", T0 + 5, {"keys": []}, "2"))  # an older list, stored later
    assert index.pod_at(ipaddress.ip_address(X).packed, T0 + 60, T0 + 120) is not None


def test_the_labeler_sees_each_interval_s_version_in_any_order() -> None:
    settings = LabelSettings(cloud="aws", region="us-west-2")
    web_old = pod("web-0", "10.1.0.10", node="n1", labels={"app": "old"}, created=T0 - 7200)
    web_new = pod("web-0", "10.1.0.10", node="n1", labels={"app": "new"}, created=T0 - 7200)
    index = _history(
        [
            ("nodes", "LISTED", T0 - 7000, _listed(node("n1", "192.168.0.1"))),
            ("pods", "LISTED", T0 - 7000, _listed(web_old)),
            ("pods", "MODIFIED", T0 + 300, web_new),
        ]
    )
    labeler = Labeler(
        settings, index=index, ranges=sources.load_table(sources.RangeSettings(), private=settings.private)
    )
    row = raw_row("tcp", ("10.1.0.10", 1, "10.9.9.9", 2), ("10.9.9.9", 2, "10.1.0.10", 1))
    app = COLUMN_NAMES.index("localApp")
    for start, want in [(T0 + 600, "new"), (T0, "old"), (T0 + 1200, "new"), (T0 + 60, "old")]:
        out = labeler.label(message([row], start=start), enriched_at=1)
        assert set(out.data[app]) == {want}, start
