"""Expected flow rows, derived from the kernel's own counters with the labeling rules written out here.

Ground truth: every conntrack entry of each node (``conntrack -L``, plus the final counters of entries
destroyed meanwhile, from ``conntrack -E``). The rules below restate the labeling spec in the plainest
words, on purpose without calling the enricher, so the test checks the pipeline against the spec:

1. Only TCP and UDP; loopback never. A *node flow* (the original source, or the reply source, is a
   Node's address) is dropped.
2. Source endpoint = original source ip:port; destination endpoint = the *reply source* ip:port (after
   DNAT this is the backend pod, for egress the outside address).
3. The observer's own pods are local. First matching rule:
   src on N and dst on N -> local src, out = original counters, in = reply counters;
   src on N -> local src (out = original); dst on N -> local dst (out = reply);
   src unknown and dst a pod elsewhere -> local src (out = original);
   src a pod elsewhere and dst unknown -> local dst (out = reply); otherwise the flow is dropped.
4. Class from the remote address: private ranges -> INTRA_VPC; a user range of the local cloud and
   region -> INTRA_REGION; anything else (no range) -> PUBLIC_INTERNET.
5. crossZone: both zones known and different (a pod's zone is its node's, a range's zone is its own).
6. The Service whose ClusterIP is the original destination is the remote's (or the local's) service.

Node rows (``expected_nodes``), in the node table: a TCP or UDP entry whose original source is one of the
observer's *own* node addresses has that node as its local side (out = original counters); else, whose
reply source is one, the node is the responder (out = reply counters). The remote side is labelled as a
pod's would be, or as the Node it is an address of (its name and zone). A flow between a pod and
*another* node's address is in no table of this observer (that node meters it).

Rows are compared per flow: (observer, proto, family, local pod/ip/port, remote pod/ip/port, direction,
class, crossZone, services), summing bytes and packets over intervals. ``stored`` reads the same key
through ``kubenetmon sql`` from the exact view.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from tests.e2e.cluster import NAMESPACE, S3_RANGES, S3_ZONE, SERVICE, Cluster
from tests.fixtures.lab_kernel import CtEntry

PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Key(NamedTuple):
    observer: str
    proto: str
    family: int
    local_pod: str
    local_ip: str
    local_port: int
    remote_pod: str
    remote_ip: str
    remote_port: int
    direction: str
    cls: str
    cross_zone: bool
    local_service: str
    remote_service: str


Totals = dict[Key, tuple[int, int]]
"""Key -> (bytes, packets)."""
K = TypeVar("K", bound=tuple[Any, ...])


def _in(ip: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == n.version and addr in n for n in networks)


def connection_class(ip: str) -> tuple[str, str]:
    """(class, zone) of a remote address."""
    if _in(ip, PRIVATE):
        return "INTRA_VPC", ""
    if _in(ip, map(ipaddress.ip_network, S3_RANGES)):
        return "INTRA_REGION", S3_ZONE
    return "PUBLIC_INTERNET", ""


def label(entry: CtEntry, *, observer: str, cluster: Cluster) -> list[tuple[Key, int, int]]:
    """The rows one conntrack entry seen on ``observer`` must give: [(key, bytes, packets)]."""
    if entry.proto not in ("tcp", "udp"):
        return []
    src, dst = (entry.orig[0], entry.orig[2]), (entry.reply[0], entry.reply[2])
    if _in(src[0], LOOPBACK) or _in(dst[0], LOOPBACK):
        return []
    nodes = cluster.node_ips()
    if src[0] in nodes or dst[0] in nodes:
        return []  # node flow
    pods = cluster.pod_by_ip()
    src_pod, dst_pod = pods.get(src[0]), pods.get(dst[0])
    src_here = src_pod is not None and src_pod.node == observer
    dst_here = dst_pod is not None and dst_pod.node == observer
    orig, reply = (entry.orig_packets, entry.orig_bytes), (entry.reply_packets, entry.reply_bytes)
    if src_here or (src_pod is None and dst_pod is not None and not dst_here):
        local, remote, out, inn = src, dst, orig, reply
    elif dst_here or (dst_pod is None and src_pod is not None):
        local, remote, out, inn = dst, src, reply, orig
    else:
        return []  # unknown direction
    local_pod, remote_pod = pods.get(local[0]), pods.get(remote[0])
    cls, range_zone = connection_class(remote[0])
    local_zone = cluster.zone(local_pod.node) if local_pod else ""
    remote_zone = cluster.zone(remote_pod.node) if remote_pod else range_zone
    service = f"{SERVICE[0]}/{SERVICE[1]}" if entry.orig[1] == SERVICE[2] else ""
    local_is_src = local is src
    rows = []
    for direction, (packets, nbytes) in (("out", out), ("in", inn)):
        key = Key(
            observer=observer,
            proto=entry.proto,
            family=entry.family,
            local_pod=local_pod.name if local_pod else "",
            local_ip=local[0],
            local_port=local[1],
            remote_pod=remote_pod.name if remote_pod else "",
            remote_ip=remote[0],
            remote_port=remote[1],
            direction=direction,
            cls=cls,
            cross_zone=bool(local_zone and remote_zone and local_zone != remote_zone),
            local_service="" if local_is_src else service,
            remote_service=service if local_is_src else "",
        )
        rows.append((key, nbytes, packets))
    return rows


def expected(cluster: Cluster, entries: dict[str, list[CtEntry]]) -> Totals:
    """Totals the pipeline must store for the given entries of each observer node."""
    return _summed(label, cluster, entries)


def _summed(
    rules: Callable[..., list[tuple[K, int, int]]], cluster: Cluster, entries: dict[str, list[CtEntry]]
) -> dict[K, tuple[int, int]]:
    """(bytes, packets) per key of the rows ``rules`` makes of each observer's entries; zero keys left out."""
    totals: dict[K, list[int]] = defaultdict(lambda: [0, 0])
    for observer, node_entries in entries.items():
        for entry in node_entries:
            for key, nbytes, packets in rules(entry, observer=observer, cluster=cluster):
                totals[key][0] += nbytes
                totals[key][1] += packets
    return {k: (b, p) for k, (b, p) in totals.items() if b or p}


class NodeKey(NamedTuple):
    observer: str
    proto: str
    family: int
    local_node: str
    local_ip: str
    local_port: int
    remote_node: str
    remote_pod: str
    remote_ip: str
    remote_port: int
    direction: str
    cls: str
    cross_zone: bool


NodeTotals = dict[NodeKey, tuple[int, int]]


def label_node(entry: CtEntry, *, observer: str, cluster: Cluster) -> list[tuple[NodeKey, int, int]]:
    """The node rows one conntrack entry seen on ``observer`` must give: [(key, bytes, packets)]."""
    if entry.proto not in ("tcp", "udp"):
        return []
    node = cluster.nodes[observer]
    own = {node.ipv4, node.ipv6}
    src, dst = (entry.orig[0], entry.orig[2]), (entry.reply[0], entry.reply[2])
    orig, reply = (entry.orig_packets, entry.orig_bytes), (entry.reply_packets, entry.reply_bytes)
    if src[0] in own:
        local, remote, out, inn = src, dst, orig, reply
    elif dst[0] in own:
        local, remote, out, inn = dst, src, reply, orig
    else:
        return []
    nodes = {ip: name for name, n in cluster.nodes.items() for ip in (n.ipv4, n.ipv6)}
    remote_pod = cluster.pod_by_ip().get(remote[0])
    remote_node = remote_pod.node if remote_pod else nodes.get(remote[0], "")
    cls, range_zone = connection_class(remote[0])
    remote_zone = cluster.zone(remote_node) if remote_node else range_zone
    return [
        (
            NodeKey(
                observer=observer,
                proto=entry.proto,
                family=entry.family,
                local_node=observer,
                local_ip=local[0],
                local_port=local[1],
                remote_node=remote_node,
                remote_pod=remote_pod.name if remote_pod else "",
                remote_ip=remote[0],
                remote_port=remote[1],
                direction=direction,
                cls=cls,
                cross_zone=bool(node.zone and remote_zone and node.zone != remote_zone),
            ),
            nbytes,
            packets,
        )
        for direction, (packets, nbytes) in (("out", out), ("in", inn))
    ]


def expected_nodes(cluster: Cluster, entries: dict[str, list[CtEntry]]) -> NodeTotals:
    """Node-table totals the pipeline must store for the given entries of each observer node."""
    return _summed(label_node, cluster, entries)


NODE_QUERY = """
SELECT observerNode, lower(toString(proto)) AS proto, ipFamily, localKind, localPod,
       localNode, localAvailabilityZone, IPv6NumToString(localIP) AS lip, localPort,
       remoteNode, remotePod, IPv6NumToString(remoteIP) AS rip, remotePort,
       toString(direction) AS direction, toString(connectionClass) AS cls, crossZone,
       sum(bytes) AS bytes, sum(packets) AS packets
FROM network_flows_0_node_exact
GROUP BY ALL
"""
"""Stored node-table totals per key."""


def stored_nodes(rows: list[dict[str, Any]], cluster: Cluster) -> NodeTotals:
    """``NODE_QUERY``'s JSON rows as totals; a row that is not the node's own (another kind, an owner pod,
    a zone not its node's) is kept under a key that cannot match."""
    totals: dict[NodeKey, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        node = r["localNode"]
        own = (
            r["localKind"] == "node"
            and not r["localPod"]
            and r["localAvailabilityZone"] == cluster.zone(node)
        )
        key = NodeKey(
            observer=r["observerNode"],
            proto=r["proto"],
            family=int(r["ipFamily"]),
            local_node=node
            if own
            else f"{r['localKind']}/{r['localPod']}/{r['localAvailabilityZone']}/{node}",
            local_ip=_ip(r["lip"]),
            local_port=int(r["localPort"]),
            remote_node=r["remoteNode"],
            remote_pod=r["remotePod"],
            remote_ip=_ip(r["rip"]),
            remote_port=int(r["remotePort"]),
            direction=r["direction"],
            cls=r["cls"],
            cross_zone=bool(r["crossZone"]),
        )
        totals[key][0] += int(r["bytes"])
        totals[key][1] += int(r["packets"])
    return {k: (b, p) for k, (b, p) in totals.items()}


STORED_QUERY = """
SELECT observerNode, lower(toString(proto)) AS proto, ipFamily,
       localPod, IPv6NumToString(localIP) AS lip, localPort,
       remotePod, IPv6NumToString(remoteIP) AS rip, remotePort,
       toString(direction) AS direction, toString(connectionClass) AS cls, crossZone,
       localService, remoteService, localNamespace, remoteNamespace,
       sum(bytes) AS bytes, sum(packets) AS packets, count() AS n
FROM network_flows_0_exact
GROUP BY ALL
"""
"""Stored totals per key (``localNamespace``/``remoteNamespace`` checked against the pods too)."""


def _ip(text: str) -> str:
    addr = ipaddress.ip_address(text)
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def stored(rows: list[dict[str, Any]]) -> Totals:
    """``STORED_QUERY``'s JSON rows as totals (a row whose namespace disagrees with its pod is kept
    under a key that cannot match, so it shows up as a difference)."""
    totals: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        namespaces_ok = all(
            (ns == NAMESPACE) == bool(pod)
            for pod, ns in ((r["localPod"], r["localNamespace"]), (r["remotePod"], r["remoteNamespace"]))
        )
        key = Key(
            observer=r["observerNode"],
            proto=r["proto"],
            family=int(r["ipFamily"]),
            local_pod=r["localPod"] if namespaces_ok else f"{r['localNamespace']}/{r['localPod']}",
            local_ip=_ip(r["lip"]),
            local_port=int(r["localPort"]),
            remote_pod=r["remotePod"],
            remote_ip=_ip(r["rip"]),
            remote_port=int(r["remotePort"]),
            direction=r["direction"],
            cls=r["cls"],
            cross_zone=bool(r["crossZone"]),
            local_service=r["localService"],
            remote_service=r["remoteService"],
        )
        totals[key][0] += int(r["bytes"])
        totals[key][1] += int(r["packets"])
    return {k: (b, p) for k, (b, p) in totals.items()}


def differences(want: Mapping[K, tuple[int, int]], got: Mapping[K, tuple[int, int]]) -> list[str]:
    """One line per key whose totals differ (missing, extra or wrong), empty if equal."""
    lines = []
    for key in sorted(set(want) | set(got)):
        w, g = want.get(key), got.get(key)
        if w != g:
            lines.append(f"kernel {w} stored {g}: {key}")
    return lines


def by_direction(totals: Totals) -> dict[str, int]:
    out = {"out": 0, "in": 0}
    for key, (nbytes, _) in totals.items():
        out[key.direction] += nbytes
    return out
