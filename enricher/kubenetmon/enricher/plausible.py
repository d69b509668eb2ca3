"""Plausibility of a RAW report: what no honest agent can send is refused before it is labelled.

Why it exists: the numbers are billed from, so a report that cannot be true must never reach ClickHouse,
whoever sent it (a careless agent, a node with a wrong clock, a hostile participant). Each check is a
DLQ reason (``REASONS``), counted in ``kubenetmon_enricher_rejected_reports_total``:

- ``node_mismatch``: the report names another node than the RAW subject it was published on;
- ``counter``: a row's byte counter over ``max_flow_gbps`` for the report's span (its ledger's span, at
  least its interval, at most a day), or a packet counter over that bound divided by the smallest IP
  header (20 bytes); this keeps 2**63 and 2**64-1 out, and a ``sum(bytes)`` over stored rows needs
  thousands of maximal rows before it could wrap;
- ``unaligned``: a start or a length that is not a multiple of the agents' ``--interval``;
- ``future``: a start more than ``max_clock_skew_s`` ahead of the enricher's clock;
- ``expired``: an interval older than the flows table keeps rows (``--ttl-days``): stored, it would be
  removed silently by the table's TTL, so it is dead-lettered instead;
- ``ledger``: a ledger inconsistent with the chunk's rows (fewer rows, bytes or packets than the chunk
  holds; for a one-chunk report, totals other than its rows' sums; a span ending in the future).

The checks cost one C-level pass (``sum``) over each of the four counter columns, nothing per
row in Python. Pure: no I/O, no clock (``now_s`` is passed in), no metrics (the worker counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kubenetmon.shared.errors import PoisonError
from kubenetmon.shared.ledger import Ledger, ReportRow
from kubenetmon.shared.schema import RawMessage
from kubenetmon.shared.topology import subject_token

NODE_MISMATCH: Final = "node_mismatch"
COUNTER: Final = "counter"
UNALIGNED: Final = "unaligned"
FUTURE: Final = "future"
EXPIRED: Final = "expired"
LEDGER: Final = "ledger"
REASONS: Final = (NODE_MISMATCH, COUNTER, UNALIGNED, FUTURE, EXPIRED, LEDGER)

MIN_PACKET_BYTES: Final = 20
"""The smallest IP packet conntrack can count (an IPv4 header alone): bounds packets by bytes."""
_DAY_S: Final = 86400
MAX_SPAN_S: Final = _DAY_S
"""Longest span a ledger may lift the counter bound to: at 400 Gbit/s, 4.3 PB per flow and report, so
thousands of maximal rows are needed before a ``sum(bytes)`` over stored rows could wrap."""
_ORIG_PACKETS, _ORIG_BYTES, _REPLY_PACKETS, _REPLY_BYTES = 11, 12, 13, 14
_COUNTERS: Final = (_ORIG_PACKETS, _ORIG_BYTES, _REPLY_PACKETS, _REPLY_BYTES)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a report may claim (settings, built from the enricher's flags)."""

    max_flow_gbps: float = 400.0
    """Largest rate one flow may count in one direction, Gbit/s, over the report's span (0: no bound)."""
    interval_s: int = 60
    """The agents' report interval, seconds: starts and lengths are multiples of it (0: not checked)."""
    max_clock_skew_s: float = 300.0
    """How far ahead of the enricher's clock a report may start, seconds."""
    ttl_days: int = 90
    """Days the flows table keeps a row after its interval's day (0: forever, nothing expires)."""


class Implausible(PoisonError):
    """A report that cannot be true; ``reason`` is one of ``REASONS``."""


def check(msg: RawMessage, *, bounds: Bounds, now_s: float, subject_node: str | None = None) -> None:
    """Raise ``Implausible`` for the first check ``msg`` fails (in ``REASONS`` order), else nothing.

    ``subject_node`` is the node token of the subject the report came on (None: not from a subject).
    """
    if subject_node is not None and subject_node != subject_token(msg.node):
        raise Implausible(NODE_MISMATCH, f"report of node {msg.node!r} on the subject of {subject_node!r}")
    columns = msg.columns()
    # One C-level pass per counter column: its sum. No row can exceed a bound its column's sum is within,
    # so the rows are searched (``max``) only when a sum is over it; the ledger check reuses the sums.
    sums = {at: sum(columns[at]) for at in _COUNTERS}
    span_s = _span_s(msg)
    if bounds.max_flow_gbps > 0:
        limit = int(bounds.max_flow_gbps * 1e9 / 8 * span_s)
        for at, bound, unit in ((_ORIG_BYTES, limit, "bytes"), (_REPLY_BYTES, limit, "bytes"),
                                (_ORIG_PACKETS, limit // MIN_PACKET_BYTES, "packets"),
                                (_REPLY_PACKETS, limit // MIN_PACKET_BYTES, "packets")):  # fmt: skip
            if sums[at] > bound and (most := max(columns[at])) > bound:
                raise Implausible(
                    COUNTER, f"{most} {unit} in {span_s:g}s (bound {bounds.max_flow_gbps:g} Gbit/s)"
                )
    step = bounds.interval_s
    if step > 0 and (msg.start % step or msg.seconds % step):
        raise Implausible(UNALIGNED, f"start {msg.start}, length {msg.seconds}s: not multiples of {step}s")
    if msg.start > now_s + bounds.max_clock_skew_s:
        raise Implausible(FUTURE, f"start {msg.start} is {msg.start - now_s:.0f}s ahead of the clock")
    if bounds.ttl_days > 0 and expired(msg.start, now_s=now_s, ttl_days=bounds.ttl_days):
        raise Implausible(
            EXPIRED, f"start {msg.start} is older than the flows table's {bounds.ttl_days}-day TTL"
        )
    _check_ledger(msg, rows=len(columns[0]), sums=sums, now_s=now_s, skew_s=bounds.max_clock_skew_s)


def subject_node(subject: str, *, raw_prefix: str) -> str | None:
    """The node token of RAW subject ``subject`` (``<raw_prefix><node>[.more]``); None for another subject."""
    if not subject.startswith(raw_prefix):
        return None
    return subject[len(raw_prefix) :].partition(".")[0]


def expired(start: int, *, now_s: float, ttl_days: int) -> bool:
    """Whether a row of interval ``start`` is past the table's TTL (``toDate(start) + ttl_days``) now."""
    return (start // _DAY_S + ttl_days) * _DAY_S <= now_s


def _span_s(msg: RawMessage) -> float:
    """Seconds the report's counters cover: its ledger's span, at least its interval, at most
    ``MAX_SPAN_S`` (a ledger claiming decades would lift the bound past 2**64)."""
    ledger = msg.ledger
    if ledger is None:
        return float(msg.seconds)
    span_s = min((ledger.span_to_ms - ledger.span_from_ms) / 1000, MAX_SPAN_S)
    return max(float(msg.seconds), span_s)


def _check_ledger(msg: RawMessage, *, rows: int, sums: dict[int, int], now_s: float, skew_s: float) -> None:
    ledger = msg.ledger
    if ledger is None:
        return
    nbytes = sums[_ORIG_BYTES] + sums[_REPLY_BYTES]
    npackets = sums[_ORIG_PACKETS] + sums[_REPLY_PACKETS]
    if msg.chunks == 1:
        bad = (ledger.rows, ledger.bytes, ledger.packets) != (rows, nbytes, npackets)
    else:
        bad = ledger.rows < rows or ledger.bytes < nbytes or ledger.packets < npackets
    if bad:
        raise Implausible(
            LEDGER,
            f"ledger says {ledger.rows} rows, {ledger.bytes} bytes, {ledger.packets} packets; chunk "
            f"{msg.chunk}/{msg.chunks} holds {rows} rows, {nbytes} bytes, {npackets} packets",
        )
    if ledger.span_to_ms > (now_s + skew_s) * 1000:
        raise Implausible(LEDGER, f"ledger span ends at {ledger.span_to_ms} ms, ahead of the clock")


def rejection(msg: RawMessage, reason: str, *, bounds: Bounds, now_s: float) -> ReportRow | None:
    """The ``agent_reports`` row that stands for a refused chunk, so ``check`` shows its interval as
    rejected; None for an ``expired`` one (the table's TTL would remove the row at once).

    It names the interval the report claimed, except where that is no interval: an unaligned start is
    recorded at the interval it falls in, a future one at the interval of ``now_s``. It counts nothing
    (a zero ledger over an empty span: it neither covers nor fills any other interval).
    """
    if reason == EXPIRED:
        return None
    step = bounds.interval_s or msg.seconds
    start, seconds = msg.start, msg.seconds
    if reason == UNALIGNED:
        start, seconds = start - start % step, step
    elif reason == FUTURE:
        start, seconds = int(now_s) - int(now_s) % step, step
    span_ms = start * 1000
    ledger = Ledger(span_ms, span_ms, 0, 0, 0, 0, 0, 0)
    return ReportRow(msg.boot, start, seconds, msg.seq, msg.chunk, msg.chunks, 0, ledger, rejected=reason)
