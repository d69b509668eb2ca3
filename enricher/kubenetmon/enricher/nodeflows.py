"""Node rows: flows whose local side is the observer's own node address, metered instead of dropped.

Why it exists: the labeling spec drops every flow of a node address (image pulls, the kubelet, node
agents, hostNetwork pods), yet their cross-zone and internet bytes are on the bill. A record whose
original source or reply source is an address of the *observer's own* Node becomes two rows (``out``
and ``in``) whose local side is that node: its zone, name, instance id and address, ``localKind`` =
``node``, and the pod that owns the socket when the agent could tell (a hostNetwork pod, by UID). The
remote side, class and cross-zone flag are labelled as for a pod's flow; a remote node address gets that
node's name, zone and instance id.

Node rows go to their own table (``<table>_node``), never to the flows table, so every query of the pod
rows (the README's, the cost view's) gives what it gave before. A flow between a local pod and another
node's address stays dropped as a node flow on this observer: that node's own agent meters it as a node
row. ``LabelSettings.node_flows`` off restores the drop of every node flow.

Row by row, in Python: node flows are a few per node (the node's own sockets), not the pod traffic the
columnar ``labeler`` is built for. It must not do I/O or mutate the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from kubenetmon.enricher import endpoints as ep
from kubenetmon.enricher.index import Index
from kubenetmon.shared import schema
from kubenetmon.shared.schema import RawMessage

NODE_KIND: Final = "node"
"""``localKind`` of a node row (pod rows have none: they live in the flows table)."""
_FLAGS: Final = ({"crossZone": False}, {"crossZone": True})


def own_side(observer_ips: frozenset[bytes], osrc: bytes, rsrc: bytes) -> int:
    """0: the opener (original source) is the observer's node; 1: the responder is; -1: neither."""
    if osrc in observer_ips:
        return 0
    if rsrc in observer_ips:
        return 1
    return -1


def observer_ips(index: Index, observer: str) -> frozenset[bytes]:
    node = index.nodes.get(observer)
    return frozenset(node.ips) if node is not None else frozenset()


def label_nodes(
    msg: RawMessage,
    picked: Sequence[tuple[int, int]],
    *,
    endpoints: ep.Endpoints,
    index: Index,
    settings: Any,
    enriched_at: int,
    owners: dict[int, str] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Names and columns (``COLUMN_NAMES``, then ``NODE_COLUMNS``) of the node rows of ``picked``, pairs
    of (record, own side): every ``out`` row, then every ``in`` row. ``owners``: record index -> UID of
    the pod owning the node's socket."""
    names = [*schema.COLUMN_NAMES, *(c.name for c in schema.NODE_COLUMNS)]
    outs: list[dict[str, Any]] = []
    ins: list[dict[str, Any]] = []
    if not picked:
        return names, [[] for _ in names]
    columns = msg.columns()
    proto, _, _, osrc, odst, osp, _, rsrc, _, rsp, _, opk, oby, rpk, rby = columns
    ids = schema.flow_ids(msg.msg_id, msg.identities())
    node = index.nodes.get(msg.node)
    zone, instance = (node.zone, node.instance_id) if node is not None else ("", "")
    start, end = msg.start, msg.start + msg.seconds
    for j, side in picked:
        local_ip, far_ip = (osrc[j], rsrc[j]) if side == 0 else (rsrc[j], osrc[j])
        far = _remote(endpoints, index, far_ip, start=start, end=end)
        family, ipv4, ip16 = ep._address(local_ip)
        pod = index.pods.get(owners.get(j, "")) if owners else None
        local = {
            "localAvailabilityZone": zone,
            "localNode": msg.node,
            "localInstanceID": instance,
            "localNamespace": pod.namespace if pod else "",
            "localPod": pod.name if pod else "",
            "localApp": pod.app if pod else "",
            "localWorkloadKind": pod.workload_kind if pod else "",
            "localWorkload": pod.workload if pod else "",
            "localIPv4": ipv4,
            "localIP": ip16,
        }
        cross = bool(zone) and bool(far["remoteAvailabilityZone"]) and zone != far["remoteAvailabilityZone"]
        service = index.services.get(odst[j], "")
        common = {
            **local,
            **{k: v for k, v in far.items() if not k.startswith("_")},
            "connectionClass": far["_class"],
            "remoteDNSName": msg.names.get(far_ip, "") if far["_outside"] else "",
            "remoteCloudService": far["_service"],
            "ipFamily": family,
            "crossZone": cross,
            "connectionFlags": _FLAGS[cross],
            "proto": schema.PROTO_NAMES.get(proto[j], ""),
            "localPort": osp[j] if side == 0 else rsp[j],
            "remotePort": rsp[j] if side == 0 else osp[j],
            "localService": "" if side == 0 else service,
            "remoteService": service if side == 0 else "",
        }
        orig, reply = (opk[j], oby[j]), (rpk[j], rby[j])
        sent, got = (orig, reply) if side == 0 else (reply, orig)
        out_id = ids[j]
        outs.append({**common, "direction": "out", "packets": sent[0], "bytes": sent[1], "flowId": out_id})
        in_id = out_id ^ schema.IN_FLIP
        ins.append({**common, "direction": "in", "packets": got[0], "bytes": got[1], "flowId": in_id})
    constants = {**message_constants(settings, msg, enriched_at=enriched_at), "localKind": NODE_KIND}
    rows = outs + ins
    data = [[row[n] for row in rows] if n not in constants else [constants[n]] * len(rows) for n in names]
    return names, data


def message_constants(settings: Any, msg: RawMessage, *, enriched_at: int) -> dict[str, Any]:
    """The columns every row of one message shares: the observer's cluster and the report's interval."""
    return {
        "localCloud": settings.cloud,
        "localRegion": settings.region,
        "localCluster": settings.cluster,
        "localCell": settings.cell,
        "intervalStartTime": msg.start,
        "intervalSeconds": msg.seconds,
        "environment": settings.environment,
        "observerNode": msg.node,
        "enrichedAt": enriched_at,
        "sourceId": msg.msg_id,
    }


def _remote(endpoints: ep.Endpoints, index: Index, ip: bytes, *, start: int, end: int) -> dict[str, Any]:
    """The remote columns of ``ip``: a pod's, a node's own (name, zone, instance), or a range's."""
    (endpoint,), _ = endpoints.resolve([ip], [ip], start=start, end=end)
    _, ipv4, ip16 = ep._address(ip)
    remote = endpoints.remotes.lookup(ip)
    assert remote is not None  # remote_table maps "no match" to a value too
    if endpoint[ep.KEY] == ep.NODE_ADDRESS:
        node = index.nodes.get(index.node_ips.get(ip, ""))
        settings = endpoints.settings
        values: tuple[Any, ...] = (remote.cloud, remote.region, settings.cluster, settings.cell)
        values += (node.zone, node.name, node.instance_id) if node else ("", "", "")
        values += ("", "", "", "", "", ipv4, ip16)
        cls, service = remote.cls, remote.service
    else:
        far = endpoint[ep.REMOTE]
        values, cls, service = far[: len(ep.REMOTE_FIELDS)], far[ep.CLASS], far[ep.SERVICE]
    out = {"remote" + name: value for name, value in zip(ep.REMOTE_FIELDS, values, strict=True)}
    out["_class"], out["_service"] = cls, service
    out["_outside"] = endpoint[ep.KEY] == ep.NOT_A_POD  # outside the cluster: a DNS name may name it
    return out
