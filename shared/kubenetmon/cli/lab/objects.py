"""Kubernetes objects as the API server serves them (plain dicts), for synthetic clusters.

The tests and the benchmarks build the Pods, Nodes and Services the enricher's index reads from a list, a
watch or an inventory file with these, so both describe a cluster the same way. Plain data only: no client
library, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

T0 = 1_700_000_000
"""A fixed interval start (Unix seconds) the synthetic objects are dated from."""


def rfc3339(ts: float) -> str:
    """``ts`` (Unix seconds) as the API server writes a timestamp."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def pod(
    name: str,
    ips: str | list[str],
    *,
    node: str,
    namespace: str = "default",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    phase: str = "Running",
    created: float = T0 - 3600,
    host_network: bool = False,
    finished: float | None = None,
) -> dict[str, Any]:
    ips = [ips] if isinstance(ips, str) else ips
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "labels": dict(labels or {}),
        "creationTimestamp": rfc3339(created),
        "resourceVersion": "1",
    }
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "o", "controller": True}
        ]
    status: dict[str, Any] = {"phase": phase}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    if finished is not None:
        status["containerStatuses"] = [
            {"name": "c", "state": {"terminated": {"finishedAt": rfc3339(finished)}}}
        ]
    spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def node(
    name: str,
    internal: str | list[str],
    *,
    zone: str = "",
    external: str | list[str] = (),  # type: ignore[assignment]
    provider_id: str = "",
) -> dict[str, Any]:
    internal = [internal] if isinstance(internal, str) else list(internal)
    external = [external] if isinstance(external, str) else list(external)
    addresses = [{"type": "InternalIP", "address": a} for a in internal]
    addresses += [{"type": "ExternalIP", "address": a} for a in external]
    addresses.append({"type": "Hostname", "address": name})
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


def service(
    name: str, cluster_ips: str | list[str], *, namespace: str = "default", node_ports: tuple[int, ...] = ()
) -> dict[str, Any]:
    cluster_ips = [cluster_ips] if isinstance(cluster_ips, str) else cluster_ips
    ports = [{"port": 80 + i, "protocol": "TCP", "nodePort": p} for i, p in enumerate(node_ports)] or [
        {"port": 80, "protocol": "TCP"}
    ]
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
            "type": "NodePort" if node_ports else "ClusterIP",
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "ports": ports,
        },
    }
