"""Prometheus metrics of the writer (``kubenetmon_writer_*``), in base units.

Declared once so every writer process registers the same series; in a worker pool the supervisor
aggregates them (multiprocess mode), which is why the pending gauge sums live processes. Settled
messages and the DLQ are counted where they are settled (``kubenetmon_messages_settled_total`` and
``kubenetmon_dlq_messages_total`` with ``stage="writer"``). This module only declares metrics.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.shared.metrics import DURATION_BUCKETS, counter, gauge, histogram

_ROW_BUCKETS: Final = (1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000)
_AGE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800)

ROWS_WRITTEN: Final = counter("writer_rows_written_total", "Rows inserted into ClickHouse")
REPORTS_WRITTEN: Final = counter(
    "writer_reports_written_total", "agent_reports rows (one per RAW chunk) inserted into ClickHouse"
)
MESSAGE_BYTES_WRITTEN: Final = counter(
    "writer_message_bytes_written_total", "Bytes of the ENRICHED messages whose rows were inserted"
)
FLOW_BYTES_WRITTEN: Final = counter(
    "writer_flow_bytes_written_total", "Metered traffic written: the sum of the bytes column"
)
BATCH_ROWS: Final = histogram("writer_batch_rows", "Rows per insert", buckets=_ROW_BUCKETS)
BATCH_AGE: Final = histogram(
    "writer_batch_age_seconds",
    "Time from a batch's first message to the end of its insert",
    buckets=_AGE_BUCKETS,
)
INSERT_SECONDS: Final = histogram(
    "writer_insert_duration_seconds", "Duration of one successful insert", buckets=DURATION_BUCKETS
)
RETRIES: Final = counter(
    "writer_insert_retries_total",
    "Inserts attempted again: ClickHouse unavailable, or a rejected batch split in two",
    ["reason"],
)
REJECTED: Final = counter(
    "writer_rejected_messages_total", "Messages ClickHouse refused (isolated by splitting, then DLQ'd)"
)
ROWS_PENDING: Final = gauge("writer_rows_pending", "Rows fetched and not yet written", mode="livesum")
