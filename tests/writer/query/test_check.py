"""``kubenetmon check``'s output and flags, pure: the table per node, the JSON per interval, the window."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError
from kubenetmon.writer.query import check
from kubenetmon.writer.query import completeness as c

T0 = 1_800_000_000 // 60 * 60
SPEC = check.CheckSpec(T0, T0 + 180, (), 3600, "network_flows_0_exact")
VERDICTS = [
    c.Verdict("n1", T0, 60, c.COMPLETE),
    c.Verdict("n1", T0 + 60, 60, c.LOSSY, events_lost=2, table_drops=1),
    c.Verdict("n1", T0 + 120, 60, c.COVERED_LATER),
    c.Verdict("node-22", T0, 60, c.PARTIAL, missing_chunks=3),
    c.Verdict("node-22", T0 + 60, 60, c.SILENT),
    c.Verdict("node-22", T0 + 120, 60, c.SILENT),
]


def test_table_counts_states_per_node_and_explains_the_bad_ones() -> None:
    out = io.StringIO()
    check.render(SPEC, 60, VERDICTS, fmt="table", out=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "window 2027-01-15T08:00:00Z to 2027-01-15T08:03:00Z, 60s intervals"
    assert lines[1].split() == [
        "NODE", "COMPLETE", "COVERED", "LATER", "AT-RISK", "LOSSY", "PARTIAL", "SILENT", "REJECTED", "NOT",
        "YET", "METERED", "NOT", "SETTLED", "YET",
    ]  # fmt: skip
    assert lines[2].split() == ["n1", "1", "1", "0", "1", "0", "0", "0", "0", "0"]
    assert lines[3].split() == ["node-22", "0", "0", "0", "0", "1", "2", "0", "0", "0"]
    assert lines[4] == "n1 2027-01-15T08:01:00Z lossy: 0 chunks missing, 2 event overruns, 1 table drops"
    assert (
        lines[5] == "node-22 2027-01-15T08:00:00Z partial: 3 chunks missing, 0 event overruns, 0 table drops"
    )
    assert lines[6] == (
        "2 of 6 node-intervals complete (1 covered later by a catch-up report); "
        "n1 lossy 08:01\N{EN DASH}08:02, node-22 partial 08:00\N{EN DASH}08:01, "
        "node-22 silent 08:01\N{EN DASH}08:03"
    )


def test_json_has_every_interval_and_the_verdict() -> None:
    out = io.StringIO()
    check.render(SPEC, 60, VERDICTS, fmt="json", out=out)
    doc = json.loads(out.getvalue())
    assert doc["whole"] is False and doc["step_s"] == 60 and len(doc["intervals"]) == 6
    assert doc["intervals"][1] == {
        "node": "n1", "start": "2027-01-15T08:01:00Z", "seconds": 60, "state": "lossy",
        "missing_chunks": 0, "events_lost": 2, "table_drops": 1, "reasons": [],
        "link_bytes": -1, "boundary_bytes": 0, "coverage": None, "blind": False,
    }  # fmt: skip


COVERED = [
    c.Verdict("n1", T0, 60, c.COMPLETE, link_bytes=10_000_000, boundary_bytes=9_800_000),
    c.Verdict("n1", T0 + 60, 60, c.COMPLETE, link_bytes=2_000, boundary_bytes=0),  # too quiet to judge
    c.Verdict("n2", T0, 60, c.COMPLETE, link_bytes=50_000_000, boundary_bytes=1_000_000),
    c.Verdict("n2", T0 + 60, 60, c.COMPLETE, link_bytes=50_000_000, boundary_bytes=2_000_000),
    c.Verdict("n3", T0, 60, c.COMPLETE),  # an agent without link statistics
]


def test_coverage_names_the_blind_node_and_its_ratio_per_interval() -> None:
    out = io.StringIO()
    cover = check.CoverageSpec(judged=True)
    check.render(SPEC, 60, COVERED, fmt="table", out=out, coverage=cover)
    lines = out.getvalue().splitlines()
    assert lines[-5].split() == ["NODE", "MEASURED", "LINK", "BYTES", "METERED", "COVERAGE", "BLIND"]
    assert lines[-4].split() == ["n1", "2", "10,002,000", "9,800,000", "0.98", "0"]
    assert lines[-3].split() == ["n2", "2", "100,000,000", "3,000,000", "0.03", "2"]
    assert lines[-2] == (
        "coverage 0.12 over 4 node-intervals; n2 blind (coverage 0.03) 08:00\N{EN DASH}08:02"
    )
    assert [v.node for v in cover.blind(COVERED)] == ["n2", "n2"]
    out = io.StringIO()
    check.render(SPEC, 60, COVERED, fmt="json", out=out, coverage=cover)
    doc = json.loads(out.getvalue())
    assert [i["coverage"] for i in doc["intervals"]] == [0.98, 0.0, 0.02, 0.04, None]
    assert [i["blind"] for i in doc["intervals"]] == [False, False, True, True, False] and doc["blind"] == 2


def test_without_coverage_blind_intervals_change_nothing() -> None:
    assert check.CoverageSpec().blind(COVERED) == []
    out = io.StringIO()
    check.render(SPEC, 60, COVERED, fmt="table", out=out)
    assert "blind" not in out.getvalue()


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "start": "-1h", "end": "now", "node": [], "settle": "2m", "reach": "6h", "accept_no_timestamps": False
    }  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_the_window_is_kept_and_settled_marks_where_reports_may_still_be_in_flight() -> None:
    spec = check.spec_from(_args(), now=T0 + 3600, flows_view="v")
    assert (spec.start, spec.end, spec.reach_s, spec.settled) == (T0, T0 + 3600, 6 * 3600, T0 + 3600 - 120)
    with pytest.raises(ConfigError, match="is not after"):
        check.spec_from(_args(start="now", end="-1h"), now=T0, flows_view="v")
    with pytest.raises(ConfigError, match="not a time"):
        check.spec_from(_args(start="yesterday"), now=T0, flows_view="v")


def test_queries_name_the_exact_views_and_filter_nodes() -> None:
    spec = check.CheckSpec(T0, T0 + 60, ("a", "b'c"), 600, "network_flows_0_exact", "kubenetmon")
    assert "FROM `kubenetmon`.`agent_reports_exact`" in check.reports_query(spec)
    assert "`node` IN ('a', 'b\\'c')" in check.reports_query(spec)
    assert f"intervalStartTime >= toDateTime({T0 - 600})" in check.reports_query(spec)
    assert "FROM `kubenetmon`.`network_flows_0_exact`" in check.nodes_query(spec)


def test_exit_codes_tell_complete_incomplete_and_nothing_apart() -> None:
    ok, later = c.Verdict("n", T0, 60, c.COMPLETE), c.Verdict("n", T0 + 60, 60, c.COVERED_LATER)
    unjudged = [c.Verdict("n", T0, 60, c.NOT_YET), c.Verdict("n", T0 + 60, 60, c.NOT_SETTLED)]
    assert check.exit_code([ok, later, *unjudged]) == exits.DONE == 0
    assert check.exit_code([ok, c.Verdict("n", T0 + 60, 60, c.SILENT)]) == exits.INCOMPLETE == 1
    # a state this module does not know (added later) is incomplete, never complete
    assert check.exit_code([ok, c.Verdict("n", T0 + 60, 60, "some future state")]) == 1
    assert check.exit_code([]) == check.exit_code(unjudged) == exits.NOTHING_TO_JUDGE == 3
    assert exits.UNREADABLE == 4
    for code in ("0 complete", "1 incomplete", "2 bad flags", "3 nothing to judge", "4 the store cannot"):
        assert code in check.EXIT_CODES


def test_a_window_cut_by_settling_says_so() -> None:
    spec = check.CheckSpec(T0, T0 + 180, (), 3600, "v", settled=T0 + 60)
    found = [c.Verdict("n", T0, 60, c.COMPLETE), c.Verdict("n", T0 + 60, 60, c.NOT_SETTLED)]
    out = io.StringIO()
    check.render(spec, 60, found, fmt="table", out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("; intervals ending after 2027-01-15T08:01:00Z not settled yet")
    assert lines[-1] == "1 of 1 node-intervals complete (1 not settled yet, not judged)"


def test_a_rejected_interval_is_counted_named_with_its_reasons_and_never_whole() -> None:
    found = [
        c.Verdict("n1", T0, 60, c.COMPLETE),
        c.Verdict("n1", T0 + 60, 60, c.REJECTED, reasons=("counter",)),
    ]
    out = io.StringIO()
    check.render(SPEC, 60, found, fmt="table", out=out)
    lines = out.getvalue().splitlines()
    assert lines[2].split() == ["n1", "1", "0", "0", "0", "0", "0", "1", "0", "0"]
    assert lines[3] == "n1 2027-01-15T08:01:00Z rejected: counter"
    assert lines[4] == "1 of 2 node-intervals complete; n1 rejected 08:01\N{EN DASH}08:02 (rejected: counter)"
    assert not c.whole(found)
    out = io.StringIO()
    check.render(SPEC, 60, found, fmt="json", out=out)
    doc = json.loads(out.getvalue())
    assert doc["whole"] is False and doc["intervals"][1]["state"] == "rejected"
    assert doc["intervals"][1]["reasons"] == ["counter"]
