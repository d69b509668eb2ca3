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

Column by column, like the ``labeler``: it reuses the endpoints the labeler resolved for the message,
and builds each side's values once per distinct address (no dict per row: a node's kubelet, image
pulls and agents can be 5 % of a node's records). It must not do I/O or mutate the index.
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
    far: Sequence[ep.Endpoint] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Names and columns (``COLUMN_NAMES``, then ``NODE_COLUMNS``) of the node rows of ``picked``, pairs
    of (record, own side): every ``out`` row, then every ``in`` row. ``owners``: record index -> UID of
    the pod owning the node's socket. ``far``: the endpoint of each picked record's far address, as
    the labeler resolved it (else resolved here).

    Column by column: the far side's values once per distinct address, the local side's once per
    distinct (address, owner), each column one comprehension or ``zip`` over the picked records."""
    names = [*schema.COLUMN_NAMES, *(c.name for c in schema.NODE_COLUMNS)]
    if not picked:
        return names, [[] for _ in names]
    columns = msg.columns()
    proto, _, _, osrc, odst, osp, _, rsrc, _, rsp, _, opk, oby, rpk, rby = columns
    rows, sides = [j for j, _ in picked], [side for _, side in picked]
    local_ips = [osrc[j] if side == 0 else rsrc[j] for j, side in picked]
    far_ips = [rsrc[j] if side == 0 else osrc[j] for j, side in picked]
    if far is None:
        start, end = msg.start, msg.start + msg.seconds
        far, _ = endpoints.resolve(far_ips, far_ips, start=start, end=end)
    packed = msg.identities()
    node = index.nodes.get(msg.node)
    zone, instance = (node.zone, node.instance_id) if node is not None else ("", "")
    # the far side: remote columns, class, service, DNS name, crossZone (per distinct address)
    seen: dict[bytes, tuple[Any, ...]] = {}
    for ip, endpoint in zip(far_ips, far, strict=True):
        if ip not in seen:
            seen[ip] = _far(endpoints, index, ip, endpoint, names=msg.names, zone=zone)
    remote = list(zip(*map(seen.__getitem__, far_ips), strict=True))
    # the local side: the node's address, and the pod owning the socket (per distinct pair)
    uids = [owners.get(j, "") for j in rows] if owners else [""] * len(rows)
    mine: dict[tuple[bytes, str], tuple[Any, ...]] = {}
    for key in zip(local_ips, uids, strict=True):
        if key not in mine:
            mine[key] = _local(index, *key)
    local = list(zip(*map(mine.__getitem__, zip(local_ips, uids, strict=True)), strict=True))
    services = [index.services.get(odst[j], "") for j in rows]
    out_ids = schema.flow_ids(msg.msg_id, [packed[j] for j in rows])
    sent = [(opk[j], oby[j]) if side == 0 else (rpk[j], rby[j]) for j, side in picked]
    got = [(rpk[j], rby[j]) if side == 0 else (opk[j], oby[j]) for j, side in picked]
    once: dict[str, Sequence[Any]] = {
        "localAvailabilityZone": [zone] * len(rows),
        "localNode": [msg.node] * len(rows),
        "localInstanceID": [instance] * len(rows),
        **dict(zip(_LOCAL_NAMES, local, strict=True)),
        **dict(zip(_FAR_NAMES, remote, strict=True)),
        "proto": [schema.PROTO_NAMES.get(proto[j], "") for j in rows],
        "localPort": [osp[j] if side == 0 else rsp[j] for j, side in picked],
        "remotePort": [rsp[j] if side == 0 else osp[j] for j, side in picked],
        "localService": ["" if side == 0 else found for side, found in zip(sides, services, strict=True)],
        "remoteService": [found if side == 0 else "" for side, found in zip(sides, services, strict=True)],
    }
    once["connectionFlags"] = [_FLAGS[cross] for cross in once["crossZone"]]
    pairs: dict[str, tuple[Sequence[Any], Sequence[Any]]] = {
        "direction": (["out"] * len(rows), ["in"] * len(rows)),
        "packets": ([p for p, _ in sent], [p for p, _ in got]),
        "bytes": ([b for _, b in sent], [b for _, b in got]),
        "flowId": (out_ids, [i ^ schema.IN_FLIP for i in out_ids]),
    }
    constants = {**message_constants(settings, msg, enriched_at=enriched_at), "localKind": NODE_KIND}
    data: list[list[Any]] = []
    for name in names:
        if name in constants:
            data.append([constants[name]] * (2 * len(rows)))
        elif name in pairs:
            first, second = pairs[name]
            data.append([*first, *second])
        else:
            values = once[name]
            data.append([*values, *values])
    return names, data


_LOCAL_NAMES: Final = (
    "localNamespace", "localPod", "localApp", "localWorkloadKind", "localWorkload", "localIPv4", "localIP",
    "ipFamily",
)  # fmt: skip
"""What ``_local`` gives, in its order."""
_FAR_NAMES: Final = (
    *("remote" + name for name in ep.REMOTE_FIELDS), "connectionClass", "remoteCloudService",
    "remoteDNSName", "crossZone",
)  # fmt: skip
"""What ``_far`` gives, in its order."""


def _local(index: Index, ip: bytes, uid: str) -> tuple[Any, ...]:
    """The local columns of the node's address ``ip`` whose socket pod ``uid`` owns (``_LOCAL_NAMES``)."""
    family, ipv4, ip16 = ep._address(ip)
    pod = index.pods.get(uid) if uid else None
    if pod is None:
        return ("", "", "", "", "", ipv4, ip16, family)
    return (pod.namespace, pod.name, pod.app, pod.workload_kind, pod.workload, ipv4, ip16, family)


def _far(
    endpoints: ep.Endpoints,
    index: Index,
    ip: bytes,
    endpoint: ep.Endpoint,
    *,
    names: dict[bytes, str],
    zone: str,
) -> tuple[Any, ...]:
    """The far columns of ``ip`` (``_FAR_NAMES``): a pod's, a node's own (name, zone, instance), or a
    range's; its class and cloud service; its DNS name (outside the cluster only); crossZone from the
    observer's node's ``zone``."""
    if endpoint[ep.KEY] == ep.NODE_ADDRESS:
        _, ipv4, ip16 = ep._address(ip)
        remote = endpoints.remotes.lookup(ip)
        assert remote is not None  # remote_table maps "no match" to a value too
        node = index.nodes.get(index.node_ips.get(ip, ""))
        settings = endpoints.settings
        values: tuple[Any, ...] = (remote.cloud, remote.region, settings.cluster, settings.cell)
        values += (node.zone, node.name, node.instance_id) if node else ("", "", "")
        values += ("", "", "", "", "", ipv4, ip16)
        cls, service = remote.cls, remote.service
    else:
        far = endpoint[ep.REMOTE]
        values, cls, service = far[: len(ep.REMOTE_FIELDS)], far[ep.CLASS], far[ep.SERVICE]
    dns = names.get(ip, "") if endpoint[ep.KEY] == ep.NOT_A_POD else ""  # outside the cluster
    far_zone = values[4]  # remoteAvailabilityZone
    cross = bool(zone) and bool(far_zone) and zone != far_zone
    return (*values, cls, service, dns, cross)


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
