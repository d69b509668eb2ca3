"""Node rows, column by column (``nodeflows.label_nodes``), equal the row-by-row reference they replace.

The reference below is the first implementation (a dict per row, every far address resolved alone),
kept as the statement of what node rows hold. Whatever RAW message the labeler is given, the node
rows it builds must be the same values of the same types (compared as msgpack bytes: ``True`` is
not ``1``) as the reference's for the same records.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubenetmon.enricher import endpoints as ep
from kubenetmon.enricher import nodeflows
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.shared import schema
from kubenetmon.shared.schema import RawMessage
from tests.enricher.test_labeler import ALL, AWS, HOSTNET, TABLE, WEB, cluster
from tests.support.builders import T0

FLAGS = ({"crossZone": False}, {"crossZone": True})


def reference_label_nodes(
    msg: RawMessage,
    picked: Sequence[tuple[int, int]],
    *,
    endpoints: ep.Endpoints,
    index: Index,
    settings: Any,
    enriched_at: int,
    owners: dict[int, str] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """The node rows as they were first built: a dict per row, then the columns."""
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
        far = reference_remote(endpoints, index, far_ip, start=start, end=end)
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
            "connectionFlags": FLAGS[cross],
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
    constants = {
        **nodeflows.message_constants(settings, msg, enriched_at=enriched_at),
        "localKind": nodeflows.NODE_KIND,
    }
    rows = outs + ins
    data = [[row[n] for row in rows] if n not in constants else [constants[n]] * len(rows) for n in names]
    return names, data


def reference_remote(
    endpoints: ep.Endpoints, index: Index, ip: bytes, *, start: int, end: int
) -> dict[str, Any]:
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


V4 = [
    ipaddress.IPv4Address(a).packed
    for a in (
        "192.168.0.1",  # n1 (the observer): node rows
        "198.51.100.1",  # n1's external address
        "192.168.0.2",  # n2 (and a hostNetwork pod on it)
        "192.168.0.3",
        "10.1.0.10",
        "10.1.0.30",
        "10.1.1.20",
        "10.1.2.5",
        "10.96.0.20",  # a Service with a node port
        "10.9.9.9",
        "8.8.8.8",
        "3.5.140.9",
        "127.0.0.1",
    )
]
V6 = [ipaddress.IPv6Address(a).packed for a in ("fd00::10", "fd00::20", "fd00:96::1", "2600:1f00::1", "::1")]
UIDS = [f"uid-default-{HOSTNET['metadata']['name']}", f"uid-default-{WEB['metadata']['name']}", "uid-none"]
U16 = st.integers(0, 0xFFFF)
U64 = st.integers(0, (1 << 64) - 1)


@st.composite
def messages(draw: Any) -> RawMessage:
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        family = draw(st.sampled_from([schema.AF_INET, schema.AF_INET, schema.AF_INET6]))
        size = schema.ADDRESS_LENGTH[family]
        known = V4 if family == schema.AF_INET else V6
        addr = st.one_of(st.sampled_from(known), st.binary(min_size=size, max_size=size))
        a, b = draw(addr), draw(addr)
        c, d = (b, a) if draw(st.booleans()) else (draw(addr), draw(addr))
        proto = draw(st.sampled_from([6, 17, 132, 1]))
        counters = [draw(U64) for _ in range(4)]
        ports = [draw(st.sampled_from([80, 443, 30080, 10250])) for _ in range(4)]
        rows.append(
            schema.RawRow(proto, family, 0, a, b, ports[0], ports[1], c, d, ports[2], ports[3], *counters)
        )
    owners = {j: draw(st.sampled_from(UIDS)) for j in draw(st.sets(st.integers(0, max(0, len(rows) - 1))))}
    owners = owners if rows else {}
    names = draw(st.dictionaries(st.sampled_from(V4 + V6), st.sampled_from(["a.example.com", "b.example"])))
    start = draw(st.sampled_from([T0 - 60, T0, T0 + 600]))
    msg = RawMessage(
        draw(st.sampled_from(["n1", "n2"])), "boot", start, 60, 0, 0, 1, rows, owners=owners, names=names
    )
    return schema.decode_raw(schema.encode_raw(msg))  # as the enricher gets it: columns and identities


INDEX = cluster(ALL)
LABELER = Labeler(AWS, index=INDEX, ranges=TABLE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=messages())
def test_node_rows_equal_the_row_by_row_reference(msg: RawMessage) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = nodeflows.label_nodes

    def both(
        msg: RawMessage, picked: Sequence[tuple[int, int]], **kw: Any
    ) -> tuple[list[str], list[list[Any]]]:
        out = real(msg, picked, **kw)
        alone = {k: v for k, v in kw.items() if k != "far"}
        compared.append((msgpack.packb(out), msgpack.packb(reference_label_nodes(msg, picked, **alone))))
        return out

    nodeflows.label_nodes = both  # type: ignore[assignment]
    try:
        LABELER.label(msg, enriched_at=T0 * 10**9)
    finally:
        nodeflows.label_nodes = real  # type: ignore[assignment]
    for mine, reference in compared:
        assert mine == reference


@settings(max_examples=200, deadline=None)
@given(msg=messages(), data=st.data())
def test_node_rows_resolving_their_own_far_side_equal_the_reference(msg: RawMessage, data: Any) -> None:
    n = len(msg.columns()[0])
    picked = data.draw(st.lists(st.tuples(st.integers(0, max(0, n - 1)), st.integers(0, 1)), max_size=n))
    if not n:
        picked = []
    kw: dict[str, Any] = {"endpoints": LABELER.endpoints, "index": INDEX, "settings": AWS, "enriched_at": 7}
    mine = nodeflows.label_nodes(msg, picked, owners=msg.owners, **kw)
    assert msgpack.packb(mine) == msgpack.packb(reference_label_nodes(msg, picked, owners=msg.owners, **kw))
