"""The agent's Prometheus metrics (``kubenetmon_agent_*``), in one place so names stay consistent.

This module only declares metrics; it must not serve them (the shared metrics server does) nor compute.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.shared.metrics import counter, gauge, histogram

POLL_SECONDS: Final = histogram("agent_poll_duration_seconds", "one poll: DESTROY events, full dump, events")
CHECKPOINT_SECONDS: Final = histogram("agent_checkpoint_duration_seconds", "one state file write")
ENTRIES: Final = gauge("agent_conntrack_entries", "entries in the latest conntrack dump")
FLOWS: Final = gauge("agent_flows_tracked", "flows with a baseline in the delta table")
OPEN_DELTAS: Final = gauge("agent_open_interval_flows", "flows with deltas in the open interval")
POLL_FAILURES: Final = counter("agent_poll_failures_total", "polls whose conntrack dump failed (retried)")
EVENTS: Final = counter("agent_destroy_events_total", "DESTROY events read")
EVENTS_LOST: Final = counter(
    "agent_events_lost_total", "DESTROY event socket overruns (ENOBUFS): events lost, resynced by a dump"
)
TABLE: Final = counter(
    "agent_flow_table_total",
    "flow table exceptions: stale_sightings, untracked_sightings (table full), expired_without_event, "
    "duplicate_events, unseen_destroyed, counter_resets, duplicate_sightings, dying_in_dump",
    ["event"],
)
DROPPED: Final = counter("agent_dropped_records_total", "records not reported, by reason", ["reason"])
REPORTS: Final = counter("agent_reports_total", "reports cut (every interval, idle or not; partial ones)")
RECORDS: Final = counter("agent_records_published_total", "RAW rows acknowledged by the broker")
MESSAGES: Final = counter("agent_messages_published_total", "RAW messages acknowledged by the broker")
PUBLISHED_BYTES: Final = counter("agent_published_bytes_total", "RAW message bytes acknowledged")
METERED_BYTES: Final = counter(
    "agent_metered_bytes_total", "flow bytes (both directions) in acknowledged reports"
)
DUPLICATES: Final = counter(
    "agent_publish_duplicates_total", "messages the broker already had (a retried publish)"
)
IDS_TAKEN: Final = counter(
    "agent_report_id_taken_total",
    "RAW messages of a report never sent before that the broker answered as duplicates: another "
    "publisher had used this node's message id, and the report's bytes are not in the stream",
)
PUBLISH_FAILURES: Final = counter("agent_publish_failures_total", "RAW messages not acknowledged", ["reason"])
PUBLISH_RETRIES: Final = counter("agent_publish_retries_total", "report sends retried after a failure")
BACKLOG: Final = gauge("agent_backlog_reports", "reports waiting to be published")
BACKLOG_MERGES: Final = counter("agent_backlog_merges_total", "reports merged because the backlog was full")
EARLY_CUTS: Final = counter(
    "agent_early_cuts_total", "partial reports cut because the open interval reached --max-flows flows"
)
LAST_POLL: Final = gauge(
    "agent_last_poll_timestamp_seconds",
    "Unix time at which the latest completed tick (poll, cut, checkpoint) began",
)
CONNTRACK_STATS: Final = counter(
    "agent_conntrack_stats_total",
    "conntrack's own per-CPU counters, summed: found, invalid (packets conntrack refused: not metered), "
    "insert_failed, drop, early_drop (connections the table refused or evicted: not metered), error, "
    "search_restart, clash_resolve, chaintoolong",
    ["counter"],
)
TABLE_MAX: Final = gauge(
    "agent_conntrack_table_max", "nf_conntrack_max: the conntrack table's limit (host-wide)"
)
TABLE_FILL: Final = gauge(
    "agent_conntrack_table_fill_ratio", "conntrack entries / nf_conntrack_max, from the kernel's statistics"
)
TIMESTAMPS: Final = gauge(
    "agent_conntrack_timestamps_enabled",
    "1 while conntrack stamps new entries with their creation time (nf_conntrack_timestamp), else 0",
)
STATS_FAILURES: Final = counter(
    "agent_conntrack_stats_failures_total", "polls whose conntrack statistics could not be read"
)
DNS_ANSWERS: Final = counter(
    "agent_dns_answers_total", "DNS answers read with at least one address (--dns-names)"
)
DNS_LOST: Final = counter(
    "agent_dns_packets_lost_total", "DNS packets the watch socket dropped (receive buffer full): names unseen"
)
DNS_ENTRIES: Final = gauge("agent_dns_entries", "addresses with a remembered DNS name (<= --dns-max-entries)")
DNS_EVICTIONS: Final = counter(
    "agent_dns_evictions_total", "valid address -> name entries dropped to stay within --dns-max-entries"
)
DNS_CONFLICTS: Final = counter(
    "agent_dns_conflicts_total", "DNS answers naming an address that held another valid name (now ambiguous)"
)
DNS_NAMED: Final = counter("agent_dns_named_addresses_total", "addresses named in reports, per report")
DNS_AMBIGUOUS: Final = counter(
    "agent_dns_ambiguous_addresses_total",
    "addresses of reports left unnamed because two names answered them at once, per report",
)
