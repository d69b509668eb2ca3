"""The flows table: its ClickHouse types, the DDL of each schema version, and the types rows travel in.

Row identity (idempotent storage): a ReplacingMergeTree versioned by ``enrichedAt`` whose sorting key is
``(intervalStartTime, observerNode, flowId)``, all three derived from the RAW record alone (``flowId``
hashes the RAW message id, the flow tuple and the direction). A redelivered or replayed row therefore
lands on the same key and replaces the old one at merge time; labels are never part of the key, so a
replay that changes ``localApp`` replaces instead of adding. ``<table>_exact`` reads with ``FINAL``.

The daily partition is ``date`` = ``toDate(intervalStartTime)``, a function of the key, so a row and its
replacement always meet in one partition. User filters (app, pod, namespace, class, zone) are served by
skipping indexes rather than the key; projections are avoided because they do not follow replacement.

``agent_reports`` is the ledger of reports (one row per RAW chunk, from the ENRICHED message's
``report``): the same idempotence, keyed on the RAW message id, read exactly through its ``_exact`` view.
``kubenetmon check`` reads it.

Pure: no I/O here. The migrations (``migrate``) apply the statements built here.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.shared.schema import COLUMN_NAMES, COLUMNS

_LC: Final = "LowCardinality(String)"
MIGRATIONS_TABLE: Final = "kubenetmon_migrations"
"""The record of the schema versions applied to each flows table (``migrate``)."""

# kubenetmon's network_flows_0 columns keep their names and types; ours follow.
TYPES: Final[dict[str, str]] = {
    "intervalStartTime": "DateTime CODEC(Delta(4), ZSTD(1))",
    "intervalSeconds": "UInt16",
    "environment": _LC,
    "proto": _LC,
    "connectionClass": _LC,
    "connectionFlags": "Map(LowCardinality(String), Bool)",
    "direction": "Enum8('out' = 1, 'in' = 2)",
    **{
        f"{side}{name}": kind
        for side in ("local", "remote")
        for name, kind in (
            ("Cloud", _LC),
            ("Region", _LC),
            ("Cluster", _LC),
            ("Cell", _LC),
            ("AvailabilityZone", _LC),
            ("Node", "String"),
            ("InstanceID", "String"),
            ("Namespace", _LC),
            ("Pod", "String CODEC(ZSTD(1))"),
            ("IPv4", "IPv4"),
            ("Port", "UInt16"),
            ("App", "String CODEC(ZSTD(1))"),
        )
    },
    "remoteCloudService": _LC,
    "bytes": "UInt64 CODEC(T64, ZSTD(1))",
    "packets": "UInt64 CODEC(T64, ZSTD(1))",
    "observerNode": _LC,
    "ipFamily": "UInt8",
    "localIP": "IPv6 CODEC(ZSTD(1))",
    "remoteIP": "IPv6 CODEC(ZSTD(1))",
    "localWorkloadKind": _LC,
    "localWorkload": "String CODEC(ZSTD(1))",
    "remoteWorkloadKind": _LC,
    "remoteWorkload": "String CODEC(ZSTD(1))",
    "localService": "String CODEC(ZSTD(1))",
    "remoteService": "String CODEC(ZSTD(1))",
    "crossZone": "Bool",
    "flowId": "UInt64",
    "enrichedAt": "UInt64 CODEC(Delta(8), ZSTD(1))",
    "sourceId": "String CODEC(ZSTD(1))",
    "remoteDNSName": _LC,
}

# The types rows are sent in: what the wire already holds, converted by the server on insert
# (input_format_native_allow_types_conversion), which is cheaper than building Python objects.
_WIRE_INSERT_TYPES: Final = {
    "int": "UInt64",
    "str": "String",
    "bool": "Bool",
    "bytes16": "FixedString(16)",
    "map": "Map(String, Bool)",
}
_NARROW: Final = {"DateTime": "DateTime", "UInt16": "UInt16", "UInt8": "UInt8", "IPv4": "UInt32"}


def _insert_type(name: str, wire: str) -> str:
    base = TYPES[name].split(" CODEC")[0]
    return _NARROW.get(base, _WIRE_INSERT_TYPES[wire])


INSERT_TYPES: Final[tuple[str, ...]] = tuple(_insert_type(c.name, c.wire) for c in COLUMNS)
"""Insert type of each column of ``COLUMN_NAMES``, in that order."""

# Columns added after the first schema version, with the version that added them.
LABEL_COLUMNS: Final = (
    "localWorkloadKind",
    "localWorkload",
    "remoteWorkloadKind",
    "remoteWorkload",
    "localService",
    "remoteService",
    "crossZone",
)
NAME_COLUMNS: Final = ("remoteDNSName",)
BASE_COLUMNS: Final = tuple(n for n in COLUMN_NAMES if n not in LABEL_COLUMNS + NAME_COLUMNS)

# Skipping indexes for the users' filters; the sorting key already serves time ranges.
INDEXES: Final = (
    ("idx_local_app", "localApp", "bloom_filter(0.01)", 4),
    ("idx_remote_app", "remoteApp", "bloom_filter(0.01)", 4),
    ("idx_local_pod", "localPod", "bloom_filter(0.01)", 4),
    ("idx_remote_pod", "remotePod", "bloom_filter(0.01)", 4),
    ("idx_local_namespace", "localNamespace", "set(64)", 4),
    ("idx_remote_namespace", "remoteNamespace", "set(64)", 4),
    ("idx_local_workload", "localWorkload", "bloom_filter(0.01)", 4),
    ("idx_remote_workload", "remoteWorkload", "bloom_filter(0.01)", 4),
    ("idx_class", "connectionClass", "set(8)", 4),
    ("idx_local_zone", "localAvailabilityZone", "set(64)", 4),
    ("idx_remote_zone", "remoteAvailabilityZone", "set(64)", 4),
    ("idx_cross_zone", "crossZone", "minmax", 4),
)


def q(name: str) -> str:
    """Back-quoted identifier (names are validated identifiers; quoting keeps keywords safe)."""
    return "`" + name.replace("`", "") + "`"


def fqn(database: str, table: str) -> str:
    return f"{q(database)}.{q(table)}"


def exact_view(table: str) -> str:
    """Name of the view that reads ``table`` exactly (``FINAL``)."""
    return f"{table}_exact"


def column_defs(names: tuple[str, ...]) -> str:
    return ",\n    ".join(f"{q(n)} {TYPES[n]}" for n in names)


def create_table(database: str, table: str) -> str:
    """Schema version 1: kubenetmon's columns plus the row identity (observer, addresses, flowId...)."""
    return f"""CREATE TABLE IF NOT EXISTS {fqn(database, table)} (
    `date` Date DEFAULT toDate(intervalStartTime),
    {column_defs(BASE_COLUMNS)}
)
ENGINE = ReplacingMergeTree(enrichedAt)
PARTITION BY date
ORDER BY (intervalStartTime, observerNode, flowId)
SETTINGS index_granularity = 8192"""


def add_label_columns(database: str, table: str) -> str:
    """Schema version 2: workloads, services and the cross-zone flag."""
    after = "remoteIP"
    clauses = []
    for name in LABEL_COLUMNS:
        clauses.append(f"ADD COLUMN IF NOT EXISTS {q(name)} {TYPES[name]} AFTER {q(after)}")
        after = name
    return f"ALTER TABLE {fqn(database, table)} " + ", ".join(clauses)


def add_name_columns(database: str, table: str) -> str:
    """Schema version 7: the DNS name of a remote outside the cluster ('' when unknown), last."""
    clauses = [f"ADD COLUMN IF NOT EXISTS {q(name)} {TYPES[name]} DEFAULT ''" for name in NAME_COLUMNS]
    return f"ALTER TABLE {fqn(database, table)} " + ", ".join(clauses)


def add_indexes(database: str, table: str) -> str:
    """Schema version 3: skipping indexes for app, pod, namespace, workload, class and zone filters."""
    clauses = [
        f"ADD INDEX IF NOT EXISTS {name} {q(column)} TYPE {kind} GRANULARITY {gran}"
        for name, column, kind, gran in INDEXES
    ]
    return f"ALTER TABLE {fqn(database, table)} " + ", ".join(clauses)


def create_exact_view(database: str, table: str) -> str:
    """The exact read path: rows after replacement, whatever merges have run so far."""
    return (
        f"CREATE OR REPLACE VIEW {fqn(database, exact_view(table))} AS "
        f"SELECT * FROM {fqn(database, table)} FINAL"
    )


def ttl_clause(days: int, *, date: str = "date") -> str:
    """The TTL expression keeping rows ``days`` after the day ``date`` (an expression) names, as ClickHouse
    renders it back in ``system.tables.engine_full``."""
    return f"TTL {date} + toIntervalDay({int(days)})"


def modify_ttl(database: str, table: str, days: int, *, date: str = "date") -> str:
    if days <= 0:
        return f"ALTER TABLE {fqn(database, table)} REMOVE TTL"
    return f"ALTER TABLE {fqn(database, table)} MODIFY {ttl_clause(days, date=date)}"


REPORTS_TABLE: Final = "agent_reports"
REPORTS_TTL_DATE: Final = "toDate(intervalStartTime)"
"""The ledger keeps its rows as long as the flows table keeps the rows they account for (``--ttl-days``
after the interval's day), so ``check`` never finds a report without its flows, nor flows without one."""
REPORT_TYPES: Final[dict[str, str]] = {
    "sourceId": "String",
    "node": _LC,
    "boot": _LC,
    "intervalStartTime": "DateTime CODEC(Delta(4), ZSTD(1))",
    "intervalSeconds": "UInt16",
    "seq": "UInt64",
    "chunk": "UInt32",
    "chunks": "UInt32",
    "chunkRows": "UInt32",
    "spanFromMs": "UInt64",
    "spanToMs": "UInt64",
    "rows": "UInt64",
    "bytes": "UInt64",
    "packets": "UInt64",
    "flows": "UInt64",
    "eventsLost": "UInt64",
    "tableDrops": "UInt64",
    "enrichedAt": "UInt64",
    "conntrackTimestamps": "Int8 DEFAULT -1",
    "rejected": _LC,
}
"""``conntrackTimestamps``: 1 conntrack stamped creation times throughout the span, 0 it did not at one
poll at least (``check``: at-risk), -1 not said (rows of agents before it, and of tables migrated to it)."""
REPORT_COLUMNS: Final[tuple[str, ...]] = tuple(REPORT_TYPES)
REPORT_INSERT_TYPES: Final[tuple[str, ...]] = tuple(
    "String" if t == _LC else t.split(" CODEC")[0].split(" DEFAULT")[0] for t in REPORT_TYPES.values()
)


def create_reports_table(database: str) -> str:
    """The ledger of reports: one row per RAW chunk, identity = the RAW message id (``sourceId``)."""
    defs = ",\n    ".join(f"{q(n)} {t}" for n, t in REPORT_TYPES.items())
    return f"""CREATE TABLE IF NOT EXISTS {fqn(database, REPORTS_TABLE)} (
    {defs},
    `spanFrom` DateTime64(3) ALIAS fromUnixTimestamp64Milli(toInt64(spanFromMs)),
    `spanTo` DateTime64(3) ALIAS fromUnixTimestamp64Milli(toInt64(spanToMs))
)
ENGINE = ReplacingMergeTree(enrichedAt)
PARTITION BY toYYYYMM(intervalStartTime)
ORDER BY (node, intervalStartTime, sourceId)"""


def add_reports_timestamps(database: str) -> str:
    """The ledger's ``conntrackTimestamps`` column on a table made before it: -1 (not said) in old rows."""
    return (
        f"ALTER TABLE {fqn(database, REPORTS_TABLE)} "
        "ADD COLUMN IF NOT EXISTS `conntrackTimestamps` Int8 DEFAULT -1"
    )


def add_rejected_column(database: str) -> str:
    """Schema version 9: why the enricher refused a chunk (``''``: accepted; see ``ledger.ReportRow``)."""
    return (
        f"ALTER TABLE {fqn(database, REPORTS_TABLE)} "
        f"ADD COLUMN IF NOT EXISTS `rejected` {REPORT_TYPES['rejected']} DEFAULT ''"
    )


def create_reports_exact_view(database: str) -> str:
    return (
        f"CREATE OR REPLACE VIEW {fqn(database, exact_view(REPORTS_TABLE))} AS "
        f"SELECT *, spanFrom, spanTo FROM {fqn(database, REPORTS_TABLE)} FINAL"  # aliases: not in *
    )
