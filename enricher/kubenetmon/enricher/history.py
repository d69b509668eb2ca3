"""The persisted metadata history: what the enrichers saw of Pods, Nodes and Services, and when.

Why it exists: ``replay raw --metadata as-of`` must attribute an old interval with the metadata valid
then (an IP since reused by another pod, labels since changed, pods since deleted), long after the
live index pruned it. Enrichers therefore record each change they observe as a compact ``Record`` (only
the fields attribution reads, with the observation time) on the META stream; ``HistoryIndex`` replays
those records into the time-aware ``Index`` and also remembers every version of each pod's attributes,
so a lookup returns the pod as it was during the interval.

- ``Recorder`` turns watch updates into records: a full list yields a record per new or changed
  object, a ``DELETED`` for each object that vanished, and a ``LISTED`` marker with every key (so
  deletions missed while no enricher ran are closed too); a ``MODIFIED`` event that changes none of the
  kept fields yields nothing. ``snapshot`` re-records everything (the stream has limited retention).
- Record ids are deterministic (kind, key, resource version, event, content digest), so the W processes
  of N enricher pods recording the same change store it once (the duplicate window drops the rest).

Pure: no I/O and no clock (callers pass observation times); it must not know NATS or the API client.
"""

from __future__ import annotations

import copy
import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from kubenetmon.enricher.index import KINDS, Index
from kubenetmon.enricher.objects import Obj, Pod
from kubenetmon.shared.errors import DecodeError

META_VERSION: Final = 1
LISTED: Final = "LISTED"
EVENTS: Final = frozenset({"ADDED", "MODIFIED", "DELETED", LISTED})
_ADDRESS_TYPES: Final = ("InternalIP", "ExternalIP")


@dataclass(frozen=True, slots=True)
class Record:
    """One observed change: ``obj`` is the compact object (``{"keys": [...]}`` for ``LISTED``)."""

    kind: str
    event: str
    at: float
    """Observation time, Unix seconds."""
    obj: dict[str, Any]
    msg_id: str


# ------------------------------------------------------------------------------------- compact objects


def compact(kind: str, obj: Obj) -> dict[str, Any]:
    """The fields of ``obj`` that attribution reads (see ``objects``), in a stable order."""
    meta = obj.get("metadata") or {}
    short: dict[str, Any] = {
        k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp") if meta.get(k)
    }
    if meta.get("labels"):
        short["labels"] = dict(sorted(meta["labels"].items()))
    refs = [
        {"kind": r.get("kind") or "", "name": r.get("name") or "", "controller": bool(r.get("controller"))}
        for r in meta.get("ownerReferences") or ()
    ]
    if refs:
        short["ownerReferences"] = refs
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    out: dict[str, Any] = {"metadata": short}
    if kind == "pods":
        out["spec"] = _pick(spec, "nodeName", "hostNetwork")
        out["status"] = _pick(status, "phase", "podIP")
        if status.get("podIPs"):
            out["status"]["podIPs"] = [{"ip": p.get("ip")} for p in status["podIPs"]]
        ends = [
            end
            for cs in status.get("containerStatuses") or ()
            if (end := ((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        ]
        if ends:
            out["status"]["containerStatuses"] = [{"state": {"terminated": {"finishedAt": e}}} for e in ends]
    elif kind == "nodes":
        out["spec"] = _pick(spec, "providerID")
        addresses = [
            {"type": a.get("type"), "address": a.get("address")}
            for a in status.get("addresses") or ()
            if a.get("type") in _ADDRESS_TYPES
        ]
        out["status"] = {"addresses": addresses} if addresses else {}
    elif kind == "services":
        out["spec"] = _pick(spec, "clusterIP", "clusterIPs")
        ports = [{"nodePort": p["nodePort"]} for p in spec.get("ports") or () if p.get("nodePort")]
        if ports:
            out["spec"]["ports"] = ports
    return out


def _pick(source: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: source[name] for name in names if source.get(name) not in (None, "", [], False)}


def object_key(kind: str, obj: Obj) -> str:
    """The index's key of an object: pod uid, node name, Service ``namespace/name``."""
    meta = obj.get("metadata") or {}
    if kind == "pods":
        return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
    if kind == "services":
        return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    return str(meta.get("name") or "")


def digest(value: Any) -> str:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return hashlib.blake2b(packed, digest_size=8).hexdigest()


# ------------------------------------------------------------------------------------------ codec


def encode(record: Record) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "v": META_VERSION,
            "t": "meta",
            "id": record.msg_id,
            "kind": record.kind,
            "event": record.event,
            "at": float(record.at),
            "obj": record.obj,
        },
        use_bin_type=True,
    )
    return packed


def decode(data: bytes, *, subject: str = "") -> Record:
    """A META record, or ``DecodeError`` (never anything else)."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types
        raise DecodeError("malformed", f"not msgpack: {exc}", subject=subject, data=data) from None
    if not isinstance(obj, dict) or obj.get("t") != "meta":
        raise DecodeError("schema", "not a meta record", subject=subject, data=data)
    if obj.get("v") != META_VERSION:
        raise DecodeError("version", f"unsupported meta version {obj.get('v')!r}", subject=subject, data=data)
    kind, event, at, body = obj.get("kind"), obj.get("event"), obj.get("at"), obj.get("obj")
    if kind not in KINDS or event not in EVENTS or type(at) is not float or not isinstance(body, dict):
        raise DecodeError("schema", "bad meta record fields", subject=subject, data=data)
    return Record(kind=kind, event=event, at=at, obj=body, msg_id=str(obj.get("id") or ""))


# --------------------------------------------------------------------------------------- recording


class Recorder:
    """Watch updates in, records out; remembers the last recorded version of every object."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        """(kind, key) -> (digest, compact object) of what was last recorded."""

    def observe(self, kind: str, event: str, objects: Iterable[Obj], *, at: float) -> list[Record]:
        """Records for one update: a full list (``LISTED``) or one watch event."""
        if event == LISTED:
            return self._listed(kind, list(objects), at=at)
        out = []
        for obj in objects:
            key, short = object_key(kind, obj), compact(kind, obj)
            sig = digest(short)
            if event == "DELETED":
                self._known.pop((kind, key), None)
            elif self._known.get((kind, key), ("",))[0] == sig:
                continue  # nothing attribution reads has changed
            else:
                self._known[(kind, key)] = (sig, short)
            out.append(Record(kind, event, at, short, _id(kind, key, obj, event, sig)))
        return out

    def _listed(self, kind: str, objects: list[Obj], *, at: float) -> list[Record]:
        out, keys = [], []
        for obj in objects:
            key, short = object_key(kind, obj), compact(kind, obj)
            keys.append(key)
            sig = digest(short)
            if self._known.get((kind, key), ("",))[0] != sig:
                self._known[(kind, key)] = (sig, short)
                out.append(Record(kind, "MODIFIED", at, short, _id(kind, key, obj, "MODIFIED", sig)))
        present = set(keys)
        for known_kind, key in [k for k in self._known if k[0] == kind and k[1] not in present]:
            sig, short = self._known.pop((known_kind, key))
            out.append(Record(kind, "DELETED", at, short, f"meta/{kind}/{key}/gone/{sig}"))
        listing = {"keys": sorted(keys)}
        out.append(
            Record(kind, LISTED, at, listing, f"meta/{kind}/{LISTED}/{int(at // 60)}/{digest(listing)}")
        )
        return out

    def snapshot(self, *, at: float, period: int | str) -> list[Record]:
        """Every known object again, plus a ``LISTED`` marker per kind; ids shared by all recorders
        that snapshot the same ``period`` (a number, or any tag of one snapshot)."""
        out = []
        for kind in KINDS:
            keys = []
            for (known_kind, key), (sig, short) in self._known.items():
                if known_kind == kind:
                    keys.append(key)
                    out.append(Record(kind, "MODIFIED", at, short, f"meta/snap/{period}/{kind}/{key}/{sig}"))
            listing = {"keys": sorted(keys)}
            out.append(
                Record(kind, LISTED, at, listing, f"meta/snap/{period}/{kind}/{LISTED}/{digest(listing)}")
            )
        return out


def _id(kind: str, key: str, obj: Obj, event: str, sig: str) -> str:
    version = (obj.get("metadata") or {}).get("resourceVersion") or ""
    return f"meta/{kind}/{key}/{version}/{event}/{sig}"


# ------------------------------------------------------------------------------------------ replay


class HistoryIndex(Index):
    """An ``Index`` rebuilt from records, never pruned, that also answers with past pod versions.

    A pod's IP lifetime comes from the index as usual (creation, deletion or completion, grace). Its
    attributes (labels, owner, node) are those of the last version observed before the interval
    ended. Each version is answered as its own ``Pod`` whose lifetime is the version's, so callers that
    memoise by pod identity and lifetime stay exact. Nodes and Services are as last recorded (deleted
    ones included).
    """

    def __init__(self, *, grace_seconds: float = 900.0) -> None:
        super().__init__(grace_seconds=grace_seconds)
        self.records = 0
        self.first_at: float | None = None
        self._changes: dict[str, list[tuple[float, Pod]]] = {}
        """Pod uid -> (observation time, pod) of each distinct version, in time order."""
        self._answers: dict[str, tuple[list[float], list[Pod]]] = {}
        self._seen_at: dict[tuple[str, str], float] = {}

    def record(self, record: Record) -> None:
        """Apply one record, at its observation time."""
        self.records += 1
        at = record.at
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        if record.event == LISTED:
            self._close_missing(record.kind, set(record.obj.get("keys") or ()), at=at)
            return
        key = object_key(record.kind, record.obj)
        self._seen_at[(record.kind, key)] = max(at, self._seen_at.get((record.kind, key), at))
        self.apply(record.kind, record.event, record.obj, now=at)
        if record.kind == "pods" and key in self.pods:
            self._answers.pop(key, None)
            if record.event != "DELETED":
                self._add_version(key, self.pods[key], at=at)

    def pod_at(self, ip: bytes, start: float, end: float) -> Pod | None:
        pod = super().pod_at(ip, start, end)
        changes = self._changes.get(pod.uid) if pod is not None else None
        if pod is None or changes is None or len(changes) < 2:
            return pod
        answer = self._answers.get(pod.uid)
        if answer is None:
            answer = self._answers[pod.uid] = _versions(pod, changes)
        times, versions = answer
        return versions[max(0, bisect_left(times, end) - 1)]

    def _add_version(self, uid: str, pod: Pod, *, at: float) -> None:
        changes = self._changes.setdefault(uid, [])
        i = bisect_left(changes, at, key=lambda change: change[0])
        if i > 0 and _attributes(changes[i - 1][1]) == _attributes(pod):
            return
        changes.insert(i, (at if changes else float("-inf"), pod))

    def _close_missing(self, kind: str, keys: set[str], *, at: float) -> None:
        """Objects absent from a full list at ``at`` had ended (unless recorded after the list)."""
        existing = self.pods if kind == "pods" else self.nodes if kind == "nodes" else self._service_keys
        for key in list(existing):
            if key in keys or (kind, key) in self._gone:
                continue
            if self._seen_at.get((kind, key), at) < at:
                self._forget(kind, key, now=at)
                self._answers.pop(key, None)


def _versions(current: Pod, changes: list[tuple[float, Pod]]) -> tuple[list[float], list[Pod]]:
    """One ``Pod`` per version, living from its observation (the first: from creation) to the next."""
    times = [at for at, _ in changes]
    versions = []
    for i, (at, pod) in enumerate(changes):
        version = copy.copy(pod)
        version.ips, version.since = current.ips, max(current.since, at)
        version.until = times[i + 1] if i + 1 < len(times) else current.until
        versions.append(version)
    return times, versions


def _attributes(pod: Pod) -> tuple[Any, ...]:
    return (pod.namespace, pod.name, pod.node, pod.app, pod.workload_kind, pod.workload)
