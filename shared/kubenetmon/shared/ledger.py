"""The ledger of a report: what span of time a RAW report's deltas cover, and what it holds and lacks.

A report's counters are deltas between two polls, so the only honest statement of what it covers is the
time of the poll before its first one (``span_from``) to the time of its last poll (``span_to``). After an
outage the agent's next report starts from its last checkpointed poll: its span reaches back over the
gap, which is how a reader tells a *catch-up* from a silence. Next to the span, the totals (rows, bytes,
packets), the flows the agent tracked, the DESTROY events the kernel could not deliver and the packets the
conntrack table refused in that span, and whether conntrack stamped creation times throughout it
(``nf_conntrack_timestamp``; without them a short flow reusing a closed one's tuples can be lost): what
the report is known to hold and known to lack.

It travels as the optional ``ledger`` map of a RAW message (agents before it send none; decoders accept
both; its ``ts`` is optional too: unknown when absent) and as the optional ``report`` map of the ENRICHED
message made from a RAW chunk, which the writer stores as one row of ``agent_reports``. Pure: encoding
and strict decoding only, no I/O.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import Any, Final

from kubenetmon.shared.errors import DecodeError

_U64: Final = (1 << 64) - 1
_U32: Final = (1 << 32) - 1
TIMESTAMPS_UNKNOWN: Final = -1


@dataclass(frozen=True, slots=True)
class Ledger:
    """What one report covers and contains (the same for every chunk of the report)."""

    span_from_ms: int
    """Time of the poll before the report's first poll, Unix milliseconds."""
    span_to_ms: int
    """Time of the report's last poll, Unix milliseconds."""
    rows: int
    """Rows in the whole report (all chunks)."""
    bytes: int
    """Bytes counted by its rows, both directions."""
    packets: int
    """Packets counted by its rows, both directions."""
    flows: int
    """Flows the agent tracked when the report was cut."""
    events_lost: int
    """DESTROY events the kernel could not deliver (socket overruns) in the span."""
    table_drops: int
    """Connections conntrack dropped or could not insert (``drop``, ``early_drop``, ``insert_failed``)."""
    timestamps: int = TIMESTAMPS_UNKNOWN
    """1: conntrack creation timestamps were on at every poll of the span; 0: off at one at least;
    ``TIMESTAMPS_UNKNOWN`` (-1): not said (an agent from before this field)."""


LEDGER_KEYS: Final = ("from", "to", "rows", "bytes", "packets", "flows", "lost", "drops")
TIMESTAMPS_KEY: Final = "ts"
"""Optional ledger key of ``Ledger.timestamps`` (0 or 1), after the eight required ones."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One RAW chunk's place in its report, plus the report's ledger: a row of ``agent_reports``."""

    boot: str
    start: int
    """Interval start of the report (RAW ``start``), Unix seconds."""
    seconds: int
    seq: int
    chunk: int
    chunks: int
    chunk_rows: int
    """Rows in this chunk."""
    ledger: Ledger
    rejected: str = ""
    """Why the enricher refused this chunk (a DLQ reason such as ``counter``), empty when it was
    accepted. A refused chunk's row stands for it in ``agent_reports`` (no flows, a zero ledger over an
    empty span), so ``kubenetmon check`` shows its interval as rejected and never as complete."""


REPORT_KEYS: Final = ("boot", "start", "secs", "seq", "chunk", "chunks", "chunk_rows")
MAX_REJECTED_LENGTH: Final = 64
"""A rejection reason is a short token: longer values are refused."""


def ledger_map(ledger: Ledger) -> dict[str, int]:
    out = dict(zip(LEDGER_KEYS, astuple(ledger)[: len(LEDGER_KEYS)], strict=True))
    if ledger.timestamps != TIMESTAMPS_UNKNOWN:
        out[TIMESTAMPS_KEY] = ledger.timestamps
    return out


def report_map(row: ReportRow) -> dict[str, Any]:
    head = (row.boot, row.start, row.seconds, row.seq, row.chunk, row.chunks, row.chunk_rows)
    out: dict[str, Any] = {**dict(zip(REPORT_KEYS, head, strict=True)), **ledger_map(row.ledger)}
    if row.rejected:
        out["rejected"] = row.rejected  # only when set: accepted chunks encode as before
    return out


def decode_ledger(value: Any, *, subject: str, data: bytes) -> Ledger:
    """A ``Ledger`` from its wire map; anything else raises ``DecodeError`` (``schema``)."""
    if type(value) is not dict:
        raise DecodeError("schema", "ledger is not a map", subject=subject, data=data)
    ints: list[Any] = [value.get(k) for k in LEDGER_KEYS]
    bad = [k for k, v in zip(LEDGER_KEYS, ints, strict=True) if type(v) is not int or not 0 <= v <= _U64]
    if bad:
        raise DecodeError(
            "schema", f"ledger field {bad[0]!r} missing or out of range", subject=subject, data=data
        )
    stamps = value.get(TIMESTAMPS_KEY, TIMESTAMPS_UNKNOWN)
    if TIMESTAMPS_KEY in value and (type(stamps) is not int or stamps not in (0, 1)):
        raise DecodeError("schema", "ledger field 'ts' must be 0 or 1", subject=subject, data=data)
    ledger = replace(Ledger(*ints), timestamps=stamps)
    if ledger.span_from_ms > ledger.span_to_ms:
        raise DecodeError("schema", "ledger span ends before it starts", subject=subject, data=data)
    return ledger


def decode_report(value: Any, *, subject: str, data: bytes) -> ReportRow:
    """A ``ReportRow`` from its wire map; anything else raises ``DecodeError`` (``schema``)."""
    if type(value) is not dict:
        raise DecodeError("schema", "report is not a map", subject=subject, data=data)
    boot = value.get("boot")
    if type(boot) is not str or not boot:
        raise DecodeError("schema", "report boot id must be a non-empty string", subject=subject, data=data)
    head: list[Any] = [value.get(k) for k in REPORT_KEYS[1:]]
    if any(type(v) is not int or not 0 <= v <= _U64 for v in head):
        raise DecodeError(
            "schema", "report header fields must be unsigned integers", subject=subject, data=data
        )
    start, seconds, seq, chunk, chunks, chunk_rows = head
    if start > _U32 or not 0 < seconds <= 0xFFFF or not chunk < chunks <= _U32:
        raise DecodeError("schema", f"inconsistent report header {head}", subject=subject, data=data)
    ledger = decode_ledger(value, subject=subject, data=data)
    rejected = value.get("rejected", "")
    if type(rejected) is not str or len(rejected) > MAX_REJECTED_LENGTH or not rejected.isprintable():
        raise DecodeError("schema", "report rejection must be a short string", subject=subject, data=data)
    return ReportRow(boot, start, seconds, seq, chunk, chunks, chunk_rows, ledger, rejected)
