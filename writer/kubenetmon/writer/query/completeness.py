"""Completeness: for every node and interval of a window, is its data whole, late, partial, lossy or absent?

The agents' ledger (``agent_reports``, one row per RAW chunk) is the evidence. Every report names its
interval (``intervalStartTime``/``intervalSeconds``), its chunk count and the span of time its deltas
cover (poll to poll), plus the DESTROY events lost and conntrack table drops in that span. For a node
and an interval ``[t, t + step)``:

- **partial**: a report for the interval (its own, or the catch-up that covers it) lacks chunks;
- **silent**: no report names the interval and the spans of the node's reports do not cover it;
- **lossy**: its report(s) say events were lost or the table dropped connections in their span;
- **rejected**: the enricher refused a report for the interval as implausible (``agent_reports.rejected``
  names why: ``counter``, ``future``, ...): whatever else is stored for it, it is never complete;
- **at-risk**: its report(s) say conntrack did not stamp creation times (``nf_conntrack_timestamp`` off)
  at some poll of their span: a short flow that reused a closed one's tuples may have been taken for it
  and lost. Accepted as complete with ``accept_no_timestamps`` (the operator's call); a report that does
  not say (an agent from before the ledger carried it) is not at-risk;
- **covered later**: no report of its own, but a later report's span covers it (a catch-up after an
  outage: its bytes are stored, under the catch-up's interval);
- **complete**: otherwise.

Intervals that end before a node's first report (the earliest span among the reports read, which reach
``--reach`` before the window) are **not yet metered**: the node, or its agent, did not exist yet (a new
node, a first install). They are listed but not judged, so a window in which nodes joined can be whole.
An agent down longer than that reach and restarted without its state looks the same: widen the reach to
look further back. A node known only from elsewhere, with no report at all, is silent throughout.

Those are checked in that order; the counts of a lossy interval are the sums over its reports.

**Settled** (one notion for ``check``, ``top``, the live view and the dashboard): an interval is settled
once it ended ``SETTLE_S`` ago; before that its reports may still be on their way. An interval that is not
settled is judged only if it is already complete (its report arrived whole: an interval cut short by a
clean stop is complete as soon as its report is stored); otherwise it is **not settled yet**, listed and
not judged. The window is *whole* when at least one node-interval was judged and every judged one is
complete or covered later; any other state (partial, silent, lossy, at-risk, or one added later) makes it
incomplete. Pure: rows in, verdicts out; no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

COMPLETE: Final = "complete"
COVERED_LATER: Final = "covered later"
LOSSY: Final = "lossy"
AT_RISK: Final = "at-risk"
PARTIAL: Final = "partial"
SILENT: Final = "silent"
NOT_YET: Final = "not yet metered"
REJECTED: Final = "rejected"
NOT_SETTLED: Final = "not settled yet"
STATES: Final = (COMPLETE, COVERED_LATER, AT_RISK, LOSSY, PARTIAL, SILENT, REJECTED, NOT_YET, NOT_SETTLED)
BAD: Final = frozenset({AT_RISK, LOSSY, PARTIAL, SILENT, REJECTED})
GOOD: Final = frozenset({COMPLETE, COVERED_LATER})
"""The judged states that count as complete; every other judged state is incomplete."""
UNJUDGED: Final = frozenset({NOT_YET, NOT_SETTLED})
"""Listed, neither complete nor incomplete."""
NO_TIMESTAMPS: Final = 0
"""``ChunkRow.timestamps`` of a report whose span had creation timestamps off (1: on; -1: not said)."""

SETTLE_S: Final = 120
"""Seconds after an interval's end before a missing or partial report counts against it."""


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One ``agent_reports`` row: one RAW chunk of one report."""

    node: str
    boot: str
    seq: int
    start: int
    """The report's interval start, Unix seconds."""
    seconds: int
    chunk: int
    chunks: int
    span_from_ms: int
    span_to_ms: int
    events_lost: int = 0
    table_drops: int = 0
    timestamps: int = -1
    """1: conntrack creation timestamps on throughout the span; 0: off at a poll; -1: not said."""
    rejected: str = ""
    """Why the enricher refused this chunk (empty: accepted)."""
    link_bytes: int = -1
    """Bytes on the node's external interfaces in the span (-1: not measured)."""
    boundary_bytes: int = 0
    """Bytes the report metered for flows crossing the node boundary."""


@dataclass(slots=True)
class Report:
    """The chunks of one report found in the ledger."""

    node: str
    start: int
    seconds: int
    chunks: int
    span_from_ms: int
    span_to_ms: int
    events_lost: int
    table_drops: int
    timestamps: int = -1
    present: set[int] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    link_bytes: int = -1
    boundary_bytes: int = 0

    @property
    def missing(self) -> int:
        return self.chunks - len(self.present)

    @property
    def end(self) -> int:
        return self.start + self.seconds


@dataclass(frozen=True, slots=True)
class Verdict:
    node: str
    start: int
    """Interval start, Unix seconds."""
    seconds: int
    state: str
    missing_chunks: int = 0
    events_lost: int = 0
    table_drops: int = 0
    reasons: tuple[str, ...] = ()
    """Why its reports were rejected (``rejected`` only)."""
    link_bytes: int = -1
    """Bytes its reports' spans saw on the node's external interfaces (-1: not measured)."""
    boundary_bytes: int = 0
    """Bytes its reports metered for flows crossing the node boundary."""

    @property
    def coverage(self) -> float | None:
        """``boundary_bytes / link_bytes``: how much of the node's external traffic conntrack metered
        (None when not measured or nothing crossed the interfaces)."""
        return self.boundary_bytes / self.link_bytes if self.link_bytes > 0 else None


def reports_of(rows: Iterable[ChunkRow]) -> dict[str, list[Report]]:
    """Chunks grouped into reports (by node, boot, seq and start: a row refused for its start stands
    apart from a report of the same seq), per node."""
    found: dict[tuple[str, str, int, int], Report] = {}
    for r in rows:
        report = found.get((r.node, r.boot, r.seq, r.start))
        if report is None:
            report = Report(
                r.node,
                r.start,
                r.seconds,
                r.chunks,
                r.span_from_ms,
                r.span_to_ms,
                r.events_lost,
                r.table_drops,
                r.timestamps,
                link_bytes=r.link_bytes,
                boundary_bytes=r.boundary_bytes,
            )
            found[(r.node, r.boot, r.seq, r.start)] = report
        report.present.add(r.chunk)
        if r.rejected:
            report.rejected.add(r.rejected)
    by_node: dict[str, list[Report]] = defaultdict(list)
    for report in found.values():
        by_node[report.node].append(report)
    return dict(by_node)


def intervals(start: int, end: int, *, step: int) -> range:
    """Starts of the ``step``-aligned intervals that begin in ``[start, end)``."""
    first = -(-start // step) * step
    return range(first, end, step)


def _covered(start_ms: int, end_ms: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the union of ``spans`` (sorted by start) covers ``[start_ms, end_ms]``."""
    reach = start_ms
    for lo, hi in spans:
        if lo > reach:
            return False
        reach = max(reach, hi)
        if reach >= end_ms:
            return True
    return reach >= end_ms


def judge(
    reports: Sequence[Report], *, node: str, start: int, step: int, accept_no_timestamps: bool = False
) -> Verdict:
    """The verdict on one node-interval ``[start, start + step)`` from that node's reports."""
    own = [r for r in reports if r.start <= start < r.end]
    state = COMPLETE
    if not own:
        lo_ms, hi_ms = start * 1000, (start + step) * 1000
        own = [r for r in reports if r.span_from_ms < hi_ms and r.span_to_ms > lo_ms]
        spans = sorted((r.span_from_ms, r.span_to_ms) for r in own)
        if not _covered(lo_ms, hi_ms, spans):
            return Verdict(node, start, step, SILENT)
        state = COVERED_LATER
    missing = sum(r.missing for r in own)
    lost, drops = sum(r.events_lost for r in own), sum(r.table_drops for r in own)
    reasons = tuple(sorted({reason for r in own for reason in r.rejected}))
    if reasons:
        return Verdict(node, start, step, REJECTED, missing, lost, drops, reasons)
    if missing:
        state = PARTIAL
    elif lost or drops:
        state = LOSSY
    elif not accept_no_timestamps and any(r.timestamps == NO_TIMESTAMPS for r in own):
        state = AT_RISK
    measured = all(r.link_bytes >= 0 for r in own)
    link = sum(r.link_bytes for r in own) if measured else -1
    bound = sum(r.boundary_bytes for r in own)
    return Verdict(node, start, step, state, missing, lost, drops, link_bytes=link, boundary_bytes=bound)


def classify(
    rows: Iterable[ChunkRow],
    *,
    nodes: Iterable[str],
    start: int,
    end: int,
    step: int,
    settled: int | None = None,
    accept_no_timestamps: bool = False,
) -> list[Verdict]:
    """A verdict for every node (``nodes`` plus every node with a report) and interval of the window.

    ``settled``: Unix seconds; an interval ending after it is judged only when complete (see the module).
    """
    by_node = reports_of(rows)
    out = []
    for node in sorted({*nodes, *by_node}):
        reports = by_node.get(node, [])
        first_ms = min((r.span_from_ms for r in reports), default=None)
        for t in intervals(start, end, step=step):
            if first_ms is not None and (t + step) * 1000 <= first_ms:
                out.append(Verdict(node, t, step, NOT_YET))
                continue
            verdict = judge(reports, node=node, start=t, step=step, accept_no_timestamps=accept_no_timestamps)
            if settled is not None and t + step > settled and verdict.state != COMPLETE:
                verdict = Verdict(node, t, step, NOT_SETTLED)
            out.append(verdict)
    return out


def step_of(rows: Iterable[ChunkRow], *, default: int) -> int:
    """The agents' interval: the shortest report interval in the ledger (merged catch-ups are longer)."""
    return min((r.seconds for r in rows), default=default)


# -- summary --------------------------------------------------------------------------------------


def judged(verdicts: Iterable[Verdict]) -> int:
    """How many node-intervals were judged (neither before a node's first report nor unsettled)."""
    return sum(1 for v in verdicts if v.state not in UNJUDGED)


def whole(verdicts: Iterable[Verdict]) -> bool:
    """Every judged node-interval complete (vacuously true for none: see ``judged``)."""
    return all(v.state in GOOD for v in verdicts if v.state not in UNJUDGED)


def runs(verdicts: Sequence[Verdict]) -> list[tuple[str, str, int, int]]:
    """Consecutive intervals of one node in the same bad state: ``(node, state, first start, last end)``."""
    out: list[tuple[str, str, int, int]] = []
    for v in verdicts:
        if v.state in GOOD or v.state in UNJUDGED:
            continue
        if out and out[-1][:2] == (v.node, v.state) and out[-1][3] == v.start:
            out[-1] = (v.node, v.state, out[-1][2], v.start + v.seconds)
        else:
            out.append((v.node, v.state, v.start, v.start + v.seconds))
    return out


def _hhmm(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def summary(verdicts: Sequence[Verdict], *, shown: int = 5, unjudged: bool = True) -> str:
    """One line: "1,438 of 1,440 node-intervals complete; node-7 silent 04:10-04:12" (an en dash).

    ``unjudged=False`` leaves out the counts of what was not judged (``top``'s header keeps it short)."""
    counts = {state: sum(1 for v in verdicts if v.state == state) for state in STATES}
    total = len(verdicts) - counts[NOT_YET] - counts[NOT_SETTLED]
    good = counts[COMPLETE] + counts[COVERED_LATER]
    line = f"{good:,} of {total:,} node-intervals complete" if total else "no node-interval to judge"
    notes = []
    if counts[COVERED_LATER]:
        notes.append(f"{counts[COVERED_LATER]:,} covered later by a catch-up report")
    if counts[NOT_YET] and unjudged:
        notes.append(f"{counts[NOT_YET]:,} before a node's first report, not judged")
    if counts[NOT_SETTLED] and unjudged:
        notes.append(f"{counts[NOT_SETTLED]:,} not settled yet, not judged")
    if notes:
        line += f" ({'; '.join(notes)})"
    problems = runs(verdicts)
    if problems:
        parts = [
            f"{node} {state} {_hhmm(lo)}\N{EN DASH}{_hhmm(hi)}" for node, state, lo, hi in problems[:shown]
        ]
        reasons = sorted({reason for v in verdicts for reason in v.reasons})
        if reasons:
            parts[-1] += f" (rejected: {', '.join(reasons)})"
        more = len(problems) - shown
        line += "; " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")
    return line
