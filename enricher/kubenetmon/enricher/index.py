"""The time-aware Kubernetes metadata index: pods by IP over time, nodes, services.

Why it exists: a flow must be attributed with the metadata valid during its interval (labeling spec
§2), not with whatever holds the IP when the record is processed. An IP maps to the pod records that
held it; a lookup for interval ``[t0, t1)`` takes the one record whose lifetime covers the interval,
else the one ended less than ``grace_seconds`` before it (deleted pods stay resolvable); two
candidates at the same level are ambiguous: unknown, and counted. Ended records, deleted nodes and
deleted Services are pruned after the grace period, so memory is bounded by the live objects.
``generation`` changes whenever a pod or node lookup may answer differently (an event that changes
nothing attribution uses, such as a status heartbeat, leaves it alone), so callers may memoise answers.

The index is a plain class fed by events (``apply``) and full lists (``replace``, which also marks
the kind as listed: the index is ready once every kind was listed). It must not do I/O, must not know
the Kubernetes client, and is not thread-safe: one thread applies events and labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from kubenetmon.enricher.objects import Node, Obj, Pod, node_info, service_ips

KINDS: Final = ("pods", "nodes", "services")


class Index:
    """Pods by IP (time-aware), nodes by name and IP, Services by cluster IP and node port."""

    def __init__(
        self, *, grace_seconds: float = 900.0, skew_seconds: float = 5.0, kinds: Iterable[str] = KINDS
    ) -> None:
        self.grace = grace_seconds
        """Seconds an ended pod (or deleted node/Service) stays resolvable."""
        self.skew = skew_seconds
        """Seconds of clock skew tolerated between node clocks and pod creation times."""
        self.pods: dict[str, Pod] = {}
        self.by_ip: dict[bytes, list[Pod]] = {}
        self.nodes: dict[str, Node] = {}
        self.node_ips: dict[bytes, str] = {}
        self.services: dict[bytes, str] = {}
        self.node_ports: dict[int, str] = {}
        self.ambiguous = 0
        """Lookups that found more than one candidate pod (resolved as unknown)."""
        self.generation = 0
        """Bumped by every change to pods, nodes or their addresses (not by Service changes)."""
        self._service_keys: dict[str, tuple[tuple[bytes, ...], tuple[int, ...]]] = {}
        self._gone: dict[tuple[str, str], float] = {}
        self._required = frozenset(kinds)
        self._listed: set[str] = set()

    # ---------------------------------------------------------------------------------- lookups

    @property
    def ready(self) -> bool:
        """Every required kind has been listed at least once."""
        return self._required <= self._listed

    def pod_at(self, ip: bytes, start: float, end: float) -> Pod | None:
        """The pod that held ``ip`` during ``[start, end)``, or None (unknown or ambiguous)."""
        candidates = self.by_ip.get(ip)
        if not candidates:
            return None
        latest = end + self.skew
        if len(candidates) == 1:
            pod = candidates[0]
            if pod.since < latest and (pod.until is None or pod.until + self.grace > start):
                return pod
            return None
        live = [p for p in candidates if p.since < latest and (p.until is None or p.until > start)]
        if not live:
            live = [
                p
                for p in candidates
                if p.since < latest and p.until is not None and p.until + self.grace > start
            ]
        if len(live) == 1:
            return live[0]
        if live:
            self.ambiguous += 1
        return None

    def sizes(self) -> dict[str, int]:
        return {
            "pods": len(self.pods),
            "pod_ips": len(self.by_ip),
            "nodes": len(self.nodes),
            "services": len(self._service_keys),
        }

    # ---------------------------------------------------------------------------------- updates

    def apply(self, kind: str, event: str, obj: Obj, *, now: float) -> None:
        """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED`` of a pod, node or Service."""
        if kind == "pods":
            self._pod_event(event, obj, now=now)
        elif kind == "nodes":
            self._node_event(event, obj, now=now)
        elif kind == "services":
            self._service_event(event, obj, now=now)

    def replace(self, kind: str, objs: Iterable[Obj], *, now: float) -> None:
        """A full list of ``kind``: objects missing from it are deleted (kept for the grace period)."""
        objs = list(objs)
        seen = {_key(kind, obj) for obj in objs}
        existing = self.pods if kind == "pods" else self.nodes if kind == "nodes" else self._service_keys
        for key in list(existing):
            if key not in seen and (kind, key) not in self._gone:
                self._forget(kind, key, now=now)
        for obj in objs:
            self.apply(kind, "MODIFIED", obj, now=now)
        self._listed.add(kind)
        self.prune(now=now)

    def end_missing(self, kind: str, keys: Iterable[str], *, now: float, since: dict[str, float]) -> None:
        """A full listing of ``kind`` given by keys only (a META ``LISTED`` record): objects absent from
        it ended at ``now`` unless ``since`` says they were seen at or after ``now``; the kind is listed."""
        present = set(keys)
        existing = self.pods if kind == "pods" else self.nodes if kind == "nodes" else self._service_keys
        for key in list(existing):
            if key not in present and (kind, key) not in self._gone and since.get(key, now - 1) < now:
                self._forget(kind, key, now=now)
        self._listed.add(kind)

    def prune(self, *, now: float) -> int:
        """Drop what ended more than the grace period ago; returns how many entries went."""
        expired = [key for key, until in self._gone.items() if until + self.grace <= now]
        for kind, key in expired:
            del self._gone[(kind, key)]
            if kind == "pods":
                self._drop_pod(key)
            elif kind == "nodes":
                self._drop_node(key)
            else:
                self._drop_service(key)
        return len(expired)

    def _forget(self, kind: str, key: str, *, now: float) -> None:
        self.generation += kind != "services"  # an end time changes pod_at's answers
        if kind == "pods":
            pod = self.pods[key]
            pod.until = now if pod.until is None else min(pod.until, now)
            self._gone[(kind, key)] = pod.until
        else:
            self._gone[(kind, key)] = now

    def _pod_event(self, event: str, obj: Obj, *, now: float) -> None:
        new = Pod(obj, now=now)
        old = self.pods.get(new.uid)
        if event == "DELETED":
            if old is None:  # never seen alive: still attributable for the grace period
                new.until = now if new.until is None else min(new.until, now)
                self._add_pod(new)
            elif ("pods", new.uid) not in self._gone:
                self._forget("pods", new.uid, now=now)
            return
        if old is not None:
            if old.until is not None and new.until is None:
                new.until = old.until  # a pod never holds its IP again once it ended
            if new.until is not None and not new.ips:
                new.ips = old.ips  # still attributable for the intervals before it ended
            if _same_pod(old, new):
                return  # e.g. a readiness change: nothing attribution uses
            self._drop_pod(new.uid)
        self._add_pod(new)

    def _add_pod(self, new: Pod) -> None:
        self.generation += 1
        self.pods[new.uid] = new
        for ip in new.ips:
            self.by_ip.setdefault(ip, []).append(new)
        if new.until is not None:
            self._gone[("pods", new.uid)] = new.until
        else:
            self._gone.pop(("pods", new.uid), None)

    def _drop_pod(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        self.generation += 1
        for ip in pod.ips:
            holders = [p for p in self.by_ip.get(ip, ()) if p is not pod]
            if holders:
                self.by_ip[ip] = holders
            else:
                self.by_ip.pop(ip, None)

    def _node_event(self, event: str, obj: Obj, *, now: float) -> None:
        node = node_info(obj)
        if event == "DELETED":
            if node.name in self.nodes:
                self._forget("nodes", node.name, now=now)
            return
        if self.nodes.get(node.name) == node and ("nodes", node.name) not in self._gone:
            return  # a status heartbeat: zone, instance and addresses unchanged
        self._drop_node(node.name)
        self._gone.pop(("nodes", node.name), None)
        self.generation += 1
        self.nodes[node.name] = node
        for ip in node.ips:
            self.node_ips[ip] = node.name

    def _drop_node(self, name: str) -> None:
        node = self.nodes.pop(name, None)
        self.generation += node is not None
        for ip in node.ips if node else ():
            if self.node_ips.get(ip) == name:
                del self.node_ips[ip]

    def _service_event(self, event: str, obj: Obj, *, now: float) -> None:
        name, ips, ports = service_ips(obj)
        if event == "DELETED":
            if name in self._service_keys:
                self._forget("services", name, now=now)
            return
        self._drop_service(name)
        self._gone.pop(("services", name), None)
        self._service_keys[name] = (ips, ports)
        for ip in ips:
            self.services[ip] = name
        for port in ports:
            self.node_ports[port] = name

    def _drop_service(self, name: str) -> None:
        ips, ports = self._service_keys.pop(name, ((), ()))
        for ip in ips:
            if self.services.get(ip) == name:
                del self.services[ip]
        for port in ports:
            if self.node_ports.get(port) == name:
                del self.node_ports[port]


def _same_pod(old: Pod, new: Pod) -> bool:
    return all(getattr(old, name) == getattr(new, name) for name in Pod.__slots__)


def _key(kind: str, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    if kind == "pods":
        return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
    if kind == "services":
        return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    return str(meta.get("name") or "")
