"""Kubernetes objects as the API serves them (plain dicts) for the benchmarks' synthetic clusters.

The benchmarks build their own (they import nothing from the tests): the same shapes the enricher's
index reads from a list or a watch, with only the fields the benchmarks vary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

T0 = 1_700_000_000
"""A fixed interval start (Unix seconds)."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def pod(
    name: str,
    ip: str,
    *,
    node: str,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    created: float = T0 - 3600,
) -> dict[str, Any]:
    """A running pod with one IP on ``node``, controlled by ``owner`` (kind, name) if given."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": dict(labels or {}),
        "creationTimestamp": rfc3339(created),
        "resourceVersion": "1",
    }
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "o", "controller": True}
        ]
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def node(name: str, internal: str, *, zone: str = "", provider_id: str = "") -> dict[str, Any]:
    """A node with one internal address, in ``zone``."""
    addresses = [{"type": "InternalIP", "address": internal}, {"type": "Hostname", "address": name}]
    labels = {"kubernetes.io/hostname": name}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-node-{name}", "labels": labels, "resourceVersion": "1"},
        "spec": {"providerID": provider_id} if provider_id else {},
        "status": {"addresses": addresses},
    }


def service(name: str, cluster_ip: str, *, namespace: str = "default") -> dict[str, Any]:
    """A ClusterIP service on port 80."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-svc-{namespace}-{name}",
            "resourceVersion": "1",
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }
