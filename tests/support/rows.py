"""Known flow rows for ``top``'s tests, inserted as the writer's sink inserts them."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from kubenetmon.shared.schema import COLUMN_NAMES, COLUMNS
from kubenetmon.writer.flow_tables import INSERT_TYPES
from kubenetmon.writer.sink import Sink

_ZERO = {"int": 0, "str": "", "bool": False, "bytes16": bytes(16), "map": {}}
_ids = itertools.count(1)


def _mapped(ip: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    return addr.packed if addr.version == 6 else bytes(10) + b"\xff\xff" + addr.packed


def flow(*, start: int, local: str, remote: str = "", bytes: int, **values: Any) -> dict[str, Any]:
    """One row: ``local``/``remote`` are ``namespace/pod@ip`` (remote may be just an ip)."""
    row = {c.name: _ZERO[c.wire] for c in COLUMNS}
    lpod, _, lip = local.partition("@")
    rpod, _, rip = remote.partition("@") if "@" in remote else ("", "", remote or "203.0.113.9")
    family = 6 if ":" in lip else 4
    row.update(
        intervalStartTime=start,
        intervalSeconds=10,
        proto="TCP",
        connectionClass="INTRA_VPC",
        direction="out",
        localNamespace=lpod.partition("/")[0],
        localPod=lpod.partition("/")[2],
        remoteNamespace=rpod.partition("/")[0],
        remotePod=rpod.partition("/")[2],
        observerNode="node-a",
        ipFamily=family,
        localIP=_mapped(lip),
        remoteIP=_mapped(rip),
        localIPv4=int(ipaddress.ip_address(lip)) if family == 4 else 0,
        remoteIPv4=int(ipaddress.ip_address(rip)) if family == 4 else 0,
        bytes=bytes,
        packets=max(bytes // 1000, 1),
        flowId=next(_ids),
        enrichedAt=1,
        sourceId="test",
    )
    row.update(values)
    return row


def insert(sink: Sink, rows: list[dict[str, Any]]) -> None:
    columns = [[r[name] for r in rows] for name in COLUMN_NAMES]
    sink.insert(sink.table, columns, names=COLUMN_NAMES, types=INSERT_TYPES)


def insert_nodes(sink: Sink, rows: list[dict[str, Any]]) -> None:
    """Node rows (``localKind`` 'node') into the node table, as the writer inserts them."""
    from kubenetmon.writer.flow_tables import NODE_COLUMN_NAMES, NODE_INSERT_TYPES, node_table

    columns = [[r.get(name, "node") for r in rows] for name in NODE_COLUMN_NAMES]
    sink.insert(node_table(sink.table), columns, names=NODE_COLUMN_NAMES, types=NODE_INSERT_TYPES)
