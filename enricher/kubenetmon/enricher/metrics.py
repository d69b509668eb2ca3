"""The enricher's Prometheus metrics, in one place (names get the ``kubenetmon_`` prefix).

Counters are added once per message from the labeler's ``Stats``, never per record, so metrics cost
nothing measurable on the hot path. Gauges use multiprocess modes that make sense for W workers that
each hold their own index: the largest index, the most recent lag.

This module must not import any client; it only declares metrics and a helper that adds ``Stats``.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.enricher.labeler import Stats
from kubenetmon.shared import metrics

RECORDS_IN: Final = metrics.counter("enricher_records_total", "RAW records received")
ROWS_OUT: Final = metrics.counter("enricher_rows_total", "ENRICHED rows published (two per kept record)")
MESSAGES_OUT: Final = metrics.counter("enricher_messages_published_total", "ENRICHED messages published")
DROPPED: Final = metrics.counter(
    "enricher_dropped_records_total", "RAW records dropped, by reason", ["reason"]
)
REJECTED: Final = metrics.counter(
    "enricher_rejected_reports_total",
    "Implausible RAW reports dead-lettered, by reason (node_mismatch, counter, unaligned, future, expired, "
    "ledger)",
    ["reason"],
)
CUT_VALUES: Final = metrics.counter(
    "enricher_cut_values_total",
    "Label values cut to fit an ENRICHED message in the server's max payload, by column",
    ["column"],
)
UNKNOWN: Final = metrics.counter(
    "enricher_unknown_total",
    "Unknown endpoints and classes, by reason (local, remote, ambiguous, class)",
    ["reason"],
)
LABEL_SECONDS: Final = metrics.histogram("enricher_label_seconds", "Time to label one RAW message")
INDEX_OBJECTS: Final = metrics.gauge(
    "enricher_index_objects", "Objects in the index, by kind", ["kind"], mode="livemax"
)
INDEX_READY: Final = metrics.gauge("enricher_index_ready", "1 once every kind was listed", mode="livemin")
LAG: Final = metrics.gauge(
    "enricher_consumer_lag_messages",
    "RAW messages not yet delivered to the enricher consumer",
    mode="mostrecent",
)
RANGE_PREFIXES: Final = metrics.gauge(
    "enricher_range_prefixes", "Prefixes in the cloud range table", mode="livemax"
)
RANGE_FAILURES: Final = metrics.counter(
    "enricher_range_source_failures_total", "Range sources that gave nothing (warned, skipped)", ["source"]
)
RANGE_CACHED: Final = metrics.counter(
    "enricher_range_source_cached_total",
    "Range sources served from the cache after a failed download",
    ["source"],
)
WATCH_FAILURES: Final = metrics.gauge(
    "enricher_watch_failures", "Failed list/watch requests since start, by kind", ["kind"], mode="livesum"
)
WATCH_LISTS: Final = metrics.gauge(
    "enricher_watch_lists", "Full lists since start (1 + relists)", ["kind"], mode="livesum"
)

META_UNDECODABLE: Final = metrics.counter(
    "enricher_meta_undecodable_total", "META records an enricher reading META could not decode (skipped)"
)
METADATA_LEADER: Final = metrics.gauge(
    "metadata_leader", "1 while this metadata replica holds the lease (lists and watches)", mode="livemax"
)
METADATA_TERMS: Final = metrics.counter(
    "metadata_lease_acquired_total", "Times this metadata replica acquired the lease"
)
METADATA_PUBLISHED: Final = metrics.counter(
    "metadata_records_published_total", "META records the active metadata replica stored"
)
METADATA_DROPPED: Final = metrics.counter(
    "metadata_records_dropped_total",
    "META records dropped unpublished (queue full while NATS was unavailable; the next snapshot restores)",
)


def add(stats: Stats) -> None:
    """Add one message's counts."""
    RECORDS_IN.inc(stats.records)
    if stats.rows:
        ROWS_OUT.inc(stats.rows)
    for reason, n in stats.dropped.items():
        DROPPED.labels(reason).inc(n)
    for reason, n in stats.unknown.items():
        UNKNOWN.labels(reason).inc(n)


AUTH_REQUESTS: Final = metrics.counter(
    "auth_requests_total",
    "auth callout requests answered: granted, or the refusal's reason (identity.REASONS)",
    ["result"],
)
AUTH_SECONDS: Final = metrics.histogram(
    "auth_grant_seconds", "time to grant one agent its user (TokenReview, GET pod, signing)"
)
