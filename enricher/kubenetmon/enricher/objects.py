"""Kubernetes objects (plain dicts in the API's JSON shape) -> the compact records the index keeps.

Why it exists: the index must hold 10k pods cheaply and the labeler must read them fast, so each
object is reduced once, when its event arrives, to what attribution needs: a pod's names, node, app,
owning workload, IPs as packed bytes and lifetime; a node's zone, instance id and addresses; a
Service's cluster IPs and node ports. A pod's lifetime is ``[since, until)``: ``since`` is its
creation time, ``until`` when it stopped holding its IPs (Succeeded/Failed pods hold none).

Owner resolution uses the controllers' naming conventions instead of watching ReplicaSets and Jobs
(fewer watches, no extra memory): a ReplicaSet whose name is ``<name>-<pod-template-hash>`` (the
pod carries that hash as a label) belongs to Deployment ``<name>``; a Job named ``<name>-<digits>``
(the CronJob controller's scheduled-time suffix) belongs to CronJob ``<name>``. Anything else keeps
its direct controller's kind and name.

It must not do I/O and must not know the Kubernetes client: callers convert at their boundary.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple

ZONE_LABEL: Final = "topology.kubernetes.io/zone"
APP_LABELS: Final = ("app.kubernetes.io/name", "k8s-app", "app")
_CRONJOB_JOB: Final = re.compile(r"^(.+)-\d{8,}$")

Obj = Mapping[str, Any]


class Pod:
    """One pod's attribution data and the time it held its IPs."""

    __slots__ = (
        "app",
        "ips",
        "name",
        "namespace",
        "node",
        "since",
        "uid",
        "until",
        "workload",
        "workload_kind",
    )

    def __init__(self, obj: Obj, *, now: float) -> None:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        labels = meta.get("labels") or {}
        self.uid: str = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        self.namespace: str = meta.get("namespace") or ""
        self.name: str = meta.get("name") or ""
        self.node: str = spec.get("nodeName") or ""
        self.workload_kind, self.workload = owner(meta)
        self.app: str = next((labels[k] for k in APP_LABELS if labels.get(k)), self.workload)
        self.since: float = timestamp(meta.get("creationTimestamp"), default=0.0)
        self.until: float | None = None
        if status.get("phase") in ("Succeeded", "Failed"):
            self.until = _finished_at(status, default=now)
        # hostNetwork pods report the node's IPs: those are node flows, never pod attribution.
        self.ips: tuple[bytes, ...] = () if spec.get("hostNetwork") else pod_ips(status)

    def __repr__(self) -> str:
        return (
            f"Pod({self.namespace}/{self.name}, ips={len(self.ips)}, since={self.since}, until={self.until})"
        )


class Node(NamedTuple):
    name: str
    zone: str
    instance_id: str
    ips: tuple[bytes, ...]


def timestamp(text: object, *, default: float) -> float:
    """RFC 3339 (as the API server writes it) -> Unix seconds."""
    if not isinstance(text, str) or not text:
        return default
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return default


def packed(text: object) -> bytes | None:
    try:
        return ipaddress.ip_address(str(text)).packed
    except ValueError:
        return None


def pod_ips(status: Obj) -> tuple[bytes, ...]:
    texts = [p.get("ip") for p in status.get("podIPs") or ()] or [status.get("podIP")]
    return tuple(dict.fromkeys(ip for ip in map(packed, texts) if ip is not None))


def _finished_at(status: Obj, *, default: float) -> float:
    ends = [
        timestamp((cs.get("state") or {}).get("terminated", {}).get("finishedAt"), default=0.0)
        for cs in status.get("containerStatuses") or ()
    ]
    return max(ends, default=0.0) or default


def owner(meta: Obj) -> tuple[str, str]:
    """(kind, name) of the owning workload, by the controllers' naming conventions (see module doc)."""
    refs = meta.get("ownerReferences") or ()
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None:
        return "", ""
    kind, name = ref.get("kind") or "", ref.get("name") or ""
    if kind == "ReplicaSet":
        suffix = "-" + ((meta.get("labels") or {}).get("pod-template-hash") or "\0")
        if name.endswith(suffix) and len(name) > len(suffix):
            return "Deployment", name[: -len(suffix)]
    elif kind == "Job" and (m := _CRONJOB_JOB.match(name)):
        return "CronJob", m.group(1)
    return kind, name


def node_info(obj: Obj) -> Node:
    meta = obj.get("metadata") or {}
    addresses = (obj.get("status") or {}).get("addresses") or ()
    ips = (packed(a.get("address")) for a in addresses if a.get("type") in ("InternalIP", "ExternalIP"))
    provider_id = (obj.get("spec") or {}).get("providerID") or ""
    return Node(
        name=meta.get("name") or "",
        zone=(meta.get("labels") or {}).get(ZONE_LABEL) or "",
        instance_id=provider_id.rstrip("/").rpartition("/")[2],
        ips=tuple(dict.fromkeys(ip for ip in ips if ip is not None)),
    )


def service_ips(obj: Obj) -> tuple[str, tuple[bytes, ...], tuple[int, ...]]:
    """("namespace/name", cluster IPs, node ports) of a Service."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    texts = spec.get("clusterIPs") or [spec.get("clusterIP")]
    ips = tuple(ip for ip in map(packed, texts) if ip is not None)  # "None" (headless) is skipped
    ports = tuple(p["nodePort"] for p in spec.get("ports") or () if p.get("nodePort"))
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}", ips, ports
