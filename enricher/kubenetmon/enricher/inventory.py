"""Static metadata: load a Kubernetes ``List`` (YAML or JSON) into the index instead of watching.

Why it exists: ``kubenetmon label`` and an enricher run without API access (replays, air-gapped
debugging) need the same index from a file, as ``kubectl get pods,nodes,services -A -o yaml`` prints
it. Items are grouped by kind and each group is handed to ``Index.replace``, exactly as a first list
from the API server would be, so attribution is identical.

It must not talk to the API server; unknown kinds in the file are ignored (and counted in the log).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

from kubenetmon.enricher.index import KINDS, Index
from kubenetmon.shared.errors import ConfigError

log = logging.getLogger(__name__)

_RESOURCE: Final = {"Pod": "pods", "Node": "nodes", "Service": "services"}


def read(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Objects of the file by resource (``pods``, ``nodes``, ``services``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        docs = [json.loads(text)] if text.lstrip().startswith("{") else list(yaml.safe_load_all(text))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"inventory {path}: {exc}") from None
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    skipped: Counter[str] = Counter()
    for obj in _objects(docs):
        resource = _RESOURCE.get(str(obj.get("kind")))
        if resource is None:
            skipped[str(obj.get("kind"))] += 1
        else:
            out[resource].append(dict(obj))
    if skipped:
        log.info("inventory %s: ignored %s", path, dict(skipped))
    return out


def _objects(docs: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    """Flatten ``List``s (and ``PodList``s...) and loose objects; items of a typed list get its kind."""
    for doc in docs:
        if not isinstance(doc, Mapping):
            continue
        kind = str(doc.get("kind") or "")
        if isinstance(doc.get("items"), list):
            item_kind = kind.removesuffix("List") if kind != "List" else ""
            for item in doc["items"]:
                if isinstance(item, Mapping):
                    yield item if item.get("kind") or not item_kind else {**item, "kind": item_kind}
        elif kind:
            yield doc


def load(index: Index, path: str | Path, *, now: float | None = None) -> dict[str, int]:
    """Replace every kind of the index with the file's objects; the index is then ready."""
    objects = read(path)
    at = time.time() if now is None else now
    for kind in KINDS:
        index.replace(kind, objects[kind], now=at)
    counts = {kind: len(objs) for kind, objs in objects.items()}
    log.info("inventory %s loaded", path, extra=counts)
    return counts
