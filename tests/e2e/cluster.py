"""The end-to-end cluster: a lab of two nodes in two zones, three pods, outside hosts, and its metadata.

Topology (all inside network namespaces the lab creates)::

    node-a (zone-a, masquerades egress)   pods web-0, web-1      node-b (zone-b)   pod db-0 (ct zone 7)
    internet 203.0.113.7 / 2001:db8::7    (no range: PUBLIC_INTERNET)
    s3       198.51.100.7 / 2001:db8:5::7 (a user range: aws s3 in the local region, zone-a)
    Service  shop/db  10.96.0.10:80 -> db-0 (DNAT on every node)

The inventory is what the API server would list for it: Nodes with their fabric addresses as InternalIPs
and zone labels, Pods with both IPs, app labels and ownerReferences, and the Service. Only this data (and
nothing of the enricher) is what the tests' expected rows are derived from.

It must not start any process: the harness does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.fixtures.lab import Host, Lab, Node, Pod

CLOUD: Final = ("aws", "us-east-1")
INTERNET: Final = ("203.0.113.7", "2001:db8::7")
S3: Final = ("198.51.100.7", "2001:db8:5::7")
S3_RANGES: Final = ("198.51.100.0/24", "2001:db8:5::/48")
S3_ZONE: Final = "zone-a"
SERVICE: Final = ("shop", "db", "10.96.0.10", 80)
NAMESPACE: Final = "shop"
DB_CT_ZONE: Final = 7


@dataclass(frozen=True)
class PodInfo:
    """What the inventory says of a pod (the expected labels)."""

    name: str
    node: str
    app: str
    workload_kind: str
    workload: str


@dataclass
class Cluster:
    lab: Lab
    nodes: dict[str, Node]
    pods: dict[str, Pod]
    info: dict[str, PodInfo]
    internet: Host
    s3: Host
    objects: list[dict[str, Any]] = field(default_factory=list)

    def zone(self, node: str) -> str:
        return self.nodes[node].zone

    def pod_by_ip(self) -> dict[str, PodInfo]:
        """Every pod address (v4 and v6, normalised text) -> the pod."""
        return {ip: self.info[name] for name, host in self.pods.items() for ip in (host.ipv4, host.ipv6)}

    def node_ips(self) -> set[str]:
        return {ip for node in self.nodes.values() for ip in (node.ipv4, node.ipv6)}

    def write_inventory(self, path: Path) -> Path:
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": self.objects}, indent=1))
        return path

    @staticmethod
    def write_ranges(path: Path) -> Path:
        cloud, region = CLOUD
        entries = [
            {"cidr": cidr, "name": "s3", "service": "s3", "zone": S3_ZONE, "cloud": cloud, "region": region}
            for cidr in S3_RANGES
        ]
        path.write_text(json.dumps({"ranges": entries}))
        return path


def build(lab: Lab) -> Cluster:
    """The lab and its inventory (servers and the Service's backend port are added by the tests)."""
    a = lab.node("node-a", zone="zone-a", masquerade=True)
    b = lab.node("node-b", zone="zone-b")
    info = {
        "web-0": PodInfo("web-0", a.name, "web", "Deployment", "web"),
        "web-1": PodInfo("web-1", a.name, "web", "Deployment", "web"),
        "db-0": PodInfo("db-0", b.name, "db", "StatefulSet", "db"),
    }
    nodes = {a.name: a, b.name: b}
    # db-0's flows live in conntrack zone 7 on its node (as with a CNI that separates zones)
    pods = {
        name: lab.pod(name, node=nodes[p.node], ct_zone=DB_CT_ZONE if name == "db-0" else 0)
        for name, p in info.items()
    }
    internet = lab.external("internet", ipv4=INTERNET[0], ipv6=INTERNET[1])
    s3 = lab.external("s3", ipv4=S3[0], ipv6=S3[1])
    cluster = Cluster(lab, nodes, pods, info, internet, s3)
    cluster.objects = [_node(n) for n in nodes.values()]
    cluster.objects += [_pod(info[name], pods[name]) for name in info]
    return cluster


def add_service(cluster: Cluster, *, target_port: int) -> None:
    """The Service ``shop/db``: DNAT on every node, and its object in the inventory."""
    namespace, name, vip, port = SERVICE
    cluster.lab.service(vip, port, backend=cluster.pods["db-0"], backend_port=target_port)
    cluster.objects.append(
        {
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "clusterIP": vip,
                "clusterIPs": [vip],
                "ports": [{"port": port, "targetPort": target_port, "protocol": "TCP"}],
            },
        }
    )


def _node(node: Node) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"topology.kubernetes.io/zone": node.zone}},
        "spec": {"providerID": f"aws:///{node.zone}/i-{node.name}"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ipv4},
                {"type": "InternalIP", "address": node.ipv6},
                {"type": "Hostname", "address": node.name},
            ]
        },
    }


def _pod(info: PodInfo, host: Host) -> dict[str, Any]:
    if info.workload_kind == "Deployment":
        template = "5d9c7f8b6"
        owner = {"kind": "ReplicaSet", "name": f"{info.workload}-{template}", "controller": True}
        labels = {"app.kubernetes.io/name": info.app, "pod-template-hash": template}
    else:
        owner = {"kind": info.workload_kind, "name": info.workload, "controller": True}
        labels = {"app": info.app}
    return {
        "kind": "Pod",
        "metadata": {
            "name": info.name,
            "namespace": NAMESPACE,
            "uid": f"uid-{info.name}",
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {"nodeName": info.node},
        "status": {"phase": "Running", "podIP": host.ipv4, "podIPs": [{"ip": host.ipv4}, {"ip": host.ipv6}]},
    }
