"""Memoised endpoints never serve an answer that the index, the interval or the ranges would change."""

from __future__ import annotations

from typing import Any

from kubenetmon.enricher import ranges
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.shared import schema
from tests.support.builders import T0, message, node, pod, raw_row

AWS = LabelSettings(cloud="aws", region="us-west-2", cluster="c")
TABLE = ranges.build_table({}, private=AWS.private)
ROW = raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1))
LOCAL = pod("web-0", "10.1.0.10", node="n1", created=T0 - 86400)


def index(*pods: dict[str, Any]) -> Index:
    idx = Index(grace_seconds=900)
    idx.replace("nodes", [node("n1", "192.168.0.1", zone="a"), node("n2", "192.168.0.2", zone="b")], now=T0)
    idx.replace("pods", [LOCAL, *pods], now=T0)
    idx.replace("services", [], now=T0)
    return idx


def remote_pod(labeler: Labeler, *, start: int) -> str:
    result = labeler.label(message([ROW], start=start), enriched_at=1)
    return str(result.data[schema.COLUMN_INDEX["remotePod"]][0])


def test_a_message_older_than_a_memoised_pod_does_not_see_it() -> None:
    labeler = Labeler(AWS, index=index(pod("api-0", "10.1.1.20", node="n2", created=T0 - 60)), ranges=TABLE)
    assert remote_pod(labeler, start=T0) == "api-0"  # memoised now
    assert remote_pod(labeler, start=T0 - 3600) == ""  # an hour before it existed: unknown
    assert remote_pod(labeler, start=T0 + 60) == "api-0"


def test_an_ended_pod_resolves_by_interval_without_any_index_change() -> None:
    done = pod("job-0", "10.1.1.20", node="n2", phase="Succeeded", created=T0 - 7200, finished=T0 - 600)
    idx = index(done)
    labeler = Labeler(AWS, index=idx, ranges=TABLE)
    generation = idx.generation
    assert remote_pod(labeler, start=T0 - 1200) == "job-0"  # running then
    assert remote_pod(labeler, start=T0 - 120) == "job-0"  # ended, within the grace period
    assert remote_pod(labeler, start=T0 + 600) == ""  # past the grace period
    assert remote_pod(labeler, start=T0 - 1200) == "job-0"
    assert idx.generation == generation


def test_a_reused_ip_resolves_by_interval() -> None:
    old = pod(
        "old", "10.1.1.20", node="n2", uid="u-old", phase="Failed", created=T0 - 9000, finished=T0 - 600
    )
    new = pod("new", "10.1.1.20", node="n2", uid="u-new", created=T0 - 300)
    labeler = Labeler(AWS, index=index(old, new), ranges=TABLE)
    assert [remote_pod(labeler, start=t) for t in (T0, T0 - 5000, T0, T0 - 5000)] == ["new", "old"] * 2


def test_only_changes_that_attribution_uses_invalidate_the_memo() -> None:
    api = pod("api-0", "10.1.1.20", node="n2", labels={"app": "api"})
    idx = index(api)
    labeler = Labeler(AWS, index=idx, ranges=TABLE)
    assert remote_pod(labeler, start=T0) == "api-0"
    generation = idx.generation
    idx.apply("pods", "MODIFIED", {**api, "status": {**api["status"], "conditions": []}}, now=T0 + 1)
    idx.apply("nodes", "MODIFIED", node("n2", "192.168.0.2", zone="b"), now=T0 + 1)  # a heartbeat
    assert idx.generation == generation
    idx.apply("pods", "MODIFIED", pod("api-0", "10.1.1.20", node="n2", labels={"app": "v2"}), now=T0 + 2)
    assert idx.generation > generation
    result = labeler.label(message([ROW]), enriched_at=1)
    assert result.data[schema.COLUMN_INDEX["remoteApp"]][0] == "v2"
    idx.apply("pods", "DELETED", pod("api-0", "10.1.1.20", node="n2", labels={"app": "v2"}), now=T0 + 3)
    assert remote_pod(labeler, start=T0 + 2000) == ""  # deleted, past the grace period
    assert remote_pod(labeler, start=T0) == "api-0"  # still attributable before it went


def test_the_output_lists_out_records_then_in_records_and_every_column_has_every_row() -> None:
    inbound = raw_row("tcp", ("10.1.1.20", 7, "10.1.0.10", 80), ("10.1.0.10", 80, "10.1.1.20", 7))
    node_flow = raw_row("tcp", ("192.168.0.2", 7, "10.1.0.10", 80), ("10.1.0.10", 80, "192.168.0.2", 7))
    labeler = Labeler(AWS, index=index(pod("api-0", "10.1.1.20", node="n2")), ranges=TABLE)
    result = labeler.label(message([inbound, node_flow, ROW]), enriched_at=1)
    col = dict(zip(result.columns, result.data, strict=True))
    assert all(len(values) == 4 for values in result.data)
    assert col["direction"] == ["out", "out", "in", "in"]
    assert col["localPort"] == [1, 80, 1, 80]  # ROW (source local), then the inbound record
    assert col["remotePod"] == ["api-0"] * 4 and result.stats.dropped == {"node": 1}


def test_a_pod_first_seen_deleted_replaces_a_memoised_unknown() -> None:
    idx = index()
    labeler = Labeler(AWS, index=idx, ranges=TABLE)
    assert remote_pod(labeler, start=T0) == ""  # memoised: no pod ever held it
    idx.apply("pods", "DELETED", pod("gone-0", "10.1.1.20", node="n2", created=T0 - 600), now=T0 + 30)
    assert remote_pod(labeler, start=T0) == "gone-0"
