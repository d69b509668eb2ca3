"""Cluster mode rehearsed on one embedded server that is the only shard of a cluster.

Run as ``python -m tests.writer.cluster_rehearsal DIR``; prints one JSON object of findings.

chDB is given a configuration (written into DIR) naming a cluster ``metering`` whose one shard is this
server, and ``{shard}``/``{replica}`` macros, so ``Distributed`` tables over it run here: queries and
inserts go to the local shard without a network. Two things a real cluster has cannot run in chDB, and
the sink this script uses takes them out of each statement, as the cluster would have carried them
out: the distributed DDL queue (``ON CLUSTER``: every server runs the statement without that clause)
and Keeper-backed replication (a ``Replicated*MergeTree`` runs here as the same engine without its
Keeper path and replica name). Everything else is the real code path: ``migrate(cluster=...)``, the
writer's ``Batch`` and ``Sink.insert`` into the public (Distributed) table with the cluster's insert
settings, the exact view, the TTL reconciliation, the price book loads into the price table kept whole
on every server, and the cost view read through the Distributed table. chDB allows one directory per
process, hence a process of its own; it leaves with ``os._exit`` (chDB's teardown with this
configuration aborts).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from kubenetmon.shared.schema import COLUMN_NAMES
from kubenetmon.writer import pricebook
from kubenetmon.writer import sink as sink_module
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.cost_tables import PRICES_TABLE, cost_view
from kubenetmon.writer.flow_tables import INSERT_TYPES
from kubenetmon.writer.migrate import migrate
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import Sink
from tests.support.messages import interval_start, message, row

CLUSTER, DB, TABLE = "metering", "kubenetmon", "network_flows_0"
# every row crosses zones within AWS us-east-1: list price 0.01 USD per GiB each way
CROSS_ZONE = {
    "localCloud": "aws",
    "localRegion": "us-east-1",
    "remoteRegion": "us-east-1",
    "localAvailabilityZone": "us-east-1a",
    "remoteAvailabilityZone": "us-east-1b",
    "crossZone": True,
}
CONTRACT = "entries:\n  - {id: aws-cross-zone, out: 0.004}\n"
CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <macros><shard>01</shard><replica>r1</replica></macros>
  <remote_servers><metering><shard>
    <internal_replication>true</internal_replication>
    <replica><host>localhost</host><port>9000</port></replica>
  </shard></metering></remote_servers>
</clickhouse>
"""
_ON_CLUSTER = re.compile(rf"\s+ON CLUSTER `{CLUSTER}`")
_REPLICATED = re.compile(r"Replicated(\w*)MergeTree\('[^']*', '[^']*'(?:, )?")


class OneServerCluster(Sink):
    """A ``Sink`` on chDB configured as the one server of ``metering``; records what it was sent."""

    def __init__(self, settings: ClickHouseSettings, config: Path) -> None:
        super().__init__(settings)
        self._config = config
        self._insert_settings = sink_module._CLUSTER_INSERT_SETTINGS
        self.sent: list[str] = []

    def _client_args(self) -> dict[str, Any]:
        return {**super()._client_args(), "chdb_options": {"config-file": str(self._config)}}

    def command(self, sql: str) -> Any:
        self.sent.append(sql)
        return super().command(_REPLICATED.sub(r"\1MergeTree(", _ON_CLUSTER.sub("", sql)))


def tables(sink: Sink) -> dict[str, Any]:
    rows = sink.query(
        "SELECT name, engine, sorting_key, engine_full FROM system.tables "
        f"WHERE database = '{DB}' ORDER BY name"
    ).rows
    return {name: {"engine": engine, "key": key, "full": full} for name, engine, key, full in rows}


def columns(sink: Sink, table: str) -> list[list[str]]:
    return [
        list(r)
        for r in sink.query(
            f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = '{table}' "
            "ORDER BY position"
        ).rows
    ]


def insert(sink: Sink, *, enriched_at: int, start: int) -> int:
    """Write 50 rows through the writer's batch path (every call: the same row identities)."""
    batch: Batch[int] = Batch(opened_at=0.0)
    for k in range(5):
        source = f"node-a/boot/1/0/{k}"
        rows = [
            row(source, i, direction="in" if i % 2 else "out", start=start, **CROSS_ZONE) for i in range(10)
        ]
        batch.add(message(source, rows, enriched_at=enriched_at), k)
    return sink.insert(sink.table, batch.columns, names=COLUMN_NAMES, types=INSERT_TYPES)


def cost(sink: Sink) -> dict[str, Any]:
    """The cost view, read through the Distributed table: per direction, its charge, entry and USD."""
    rows = sink.query(
        "SELECT direction, groupUniqArray(costCharge), groupUniqArray(costEntry), sum(bytes), sum(costUSD) "
        f"FROM {DB}.{cost_view(TABLE)} GROUP BY direction ORDER BY direction"
    ).rows
    return {str(d): {"charge": c, "entry": e, "bytes": b, "usd": u} for d, c, e, b, u in rows}


def price_loads(sink: Sink, *, deadline_s: float = 60.0) -> list[Any]:
    """``[loads, rows]`` of the price table once its DELETE mutations are done (older loads gone)."""
    deadline = time.monotonic() + deadline_s
    pending = f"SELECT count() FROM system.mutations WHERE database = '{DB}' AND table = '{PRICES_TABLE}' "
    while sink.query(pending + "AND NOT is_done").rows[0][0] and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, with a deadline
    return list(sink.query(f"SELECT uniqExact(loadedAt), count() FROM {DB}.{PRICES_TABLE}").rows[0])


def main(directory: Path) -> dict[str, Any]:
    config = directory / "config.xml"
    config.write_text(CONFIG)
    settings = ClickHouseSettings(dsn=f"chdb://{directory / 'ch'}", database=DB, table=TABLE, ttl_days=90)
    sink = OneServerCluster(settings, config)
    found: dict[str, Any] = {}
    found["cluster"] = sink.query(f"SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'").rows
    first = migrate(sink, database=DB, table=TABLE, ttl_days=90, cluster=CLUSTER)
    found["first"] = {"applied": list(first.applied), "after": first.after, "ttl": first.ttl_changed}
    found["sent"] = sink.sent
    found["tables"] = tables(sink)
    found["columns"] = {name: columns(sink, name) for name in (TABLE, f"{TABLE}_local")}
    start = interval_start()  # once: both inserts must carry the same row identities
    found["inserted"] = insert(sink, enriched_at=1, start=start) + insert(sink, enriched_at=2, start=start)
    found["local_rows"] = sink.query(f"SELECT count() FROM {DB}.{TABLE}_local").rows[0][0]
    found["exact"] = list(
        sink.query(f"SELECT count(), sum(bytes), min(enrichedAt) FROM {DB}.{TABLE}_exact").rows[0]
    )
    found["local_final"] = sink.query(f"SELECT count() FROM {DB}.{TABLE}_local FINAL").rows[0][0]
    found["distributed_final"] = sink.query(f"SELECT count() FROM {DB}.{TABLE} FINAL").rows[0][0]
    found["expected_bytes"] = 5 * sum(1000 + i for i in range(10))
    sink.sent = []
    again = migrate(sink, database=DB, table=TABLE, ttl_days=90, cluster=CLUSTER)
    found["again"] = {"applied": list(again.applied), "ttl": again.ttl_changed}
    found["again_sent"] = list(sink.sent)
    shorter = migrate(sink, database=DB, table=TABLE, ttl_days=7, cluster=CLUSTER)
    now = tables(sink)
    found["ttl7"] = {
        "changed": shorter.ttl_changed,
        "full": now[f"{TABLE}_local"]["full"],
        "ledger": now["agent_reports_local"]["full"],
    }
    found["recorded"] = sink.query(
        f"SELECT version FROM {DB}.kubenetmon_migrations FINAL WHERE `table` = '{TABLE}' ORDER BY version"
    ).rows
    found["list_cost"] = cost(sink)
    # an operator's contract replaces the book in force: the past is re-priced
    (directory / "contract.yaml").write_text(CONTRACT)
    sink.sent = []
    contract = pricebook.load([str(directory / "contract.yaml")])
    contracted = migrate(sink, database=DB, table=TABLE, ttl_days=7, cluster=CLUSTER, price_book=contract)
    found["contract"] = {"changed": contracted.prices_changed, "sent": list(sink.sent)}
    found["contract_cost"] = cost(sink)
    found["price_loads"] = price_loads(sink)
    found["contract_rows"] = len(pricebook.table_rows(contract))
    return found


if __name__ == "__main__":
    out = main(Path(sys.argv[1]))
    sys.stdout.write(json.dumps(out, default=str) + "\n")
    sys.stdout.flush()
    os._exit(0)
