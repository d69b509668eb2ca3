"""Load cloud range documents from files and URLs, with an on-disk cache; never block start-up.

Why it exists: providers publish their ranges at URLs that change weekly; the enricher must start
(and keep labelling) when a URL is unreachable. A URL that answers is parsed, then written to the
cache; a URL that fails falls back to the cached copy; a source with neither is skipped with a
warning and reported to the caller, who counts it. Files are read as they are.

It must not interpret ranges beyond ``ranges.parse`` and must not touch the network in tests (tests
point it at a local HTTP server or at files). Only the standard library's ``urllib`` is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from kubenetmon.enricher import ranges
from kubenetmon.enricher.prefixes import Network, PrefixTable
from kubenetmon.shared.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RangeSettings:
    """Where cloud ranges come from."""

    sources: tuple[str, ...] = ()
    """Files or http(s) URLs; each may be prefixed ``aws=``, ``gcp=``, ``goog=`` or ``azure=`` to
    name its format (otherwise it is detected from the content)."""
    custom: tuple[str, ...] = ()
    """Files of user-defined CIDR entries (YAML or JSON)."""
    cache_dir: str = ""
    """Directory for cached downloads; empty: no cache."""
    refresh_seconds: float = 86400.0
    """Seconds between refreshes of URL sources; 0 disables refreshing."""
    timeout_seconds: float = 30.0
    """Per-download timeout, seconds."""


@dataclass(slots=True)
class LoadReport:
    """What a load found: for metrics and logs."""

    loaded: dict[str, int] = field(default_factory=dict)
    """source -> number of unique prefixes parsed from it."""
    cached: list[str] = field(default_factory=list)
    """URL sources served from the cache because the download failed."""
    failed: dict[str, str] = field(default_factory=dict)
    """source -> reason, for sources that gave nothing."""


def split_source(source: str) -> tuple[str | None, str]:
    """``"aws=https://..."`` -> ("aws", "https://..."); no known prefix -> (None, source)."""
    head, sep, rest = source.partition("=")
    if sep and head in ranges.PROVIDERS:
        return head, rest
    return None, source


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def read_document(path: str | Path) -> Any:
    """A JSON or YAML file (YAML is a superset, but JSON is parsed by ``json`` for speed)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def _cache_path(cache_dir: str, url: str) -> Path:
    return Path(cache_dir) / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _download(url: str, *, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "kubenetmon"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def _fetch(url: str, *, settings: RangeSettings, report: LoadReport) -> Any:
    """Download and parse ``url``; on failure fall back to the cache; raise OSError if neither."""
    cache = _cache_path(settings.cache_dir, url) if settings.cache_dir else None
    try:
        data = _download(url, timeout=settings.timeout_seconds)
        doc = json.loads(data)
    except (OSError, ValueError) as exc:
        if cache is None or not cache.exists():
            raise OSError(f"download failed and nothing cached: {exc}") from None
        log.warning("range source %s unavailable (%s); using the cached copy", url, exc)
        report.cached.append(url)
        return read_document(cache)
    if cache is not None:
        _write_atomically(cache, data)
    return doc


def load_provider(settings: RangeSettings, report: LoadReport) -> dict[Network, ranges.Range]:
    """Every source that can be read, parsed and merged; failures land in ``report``."""
    parsed: list[tuple[str, Mapping[Network, ranges.Range]]] = []
    for source in settings.sources:
        kind, location = split_source(source)
        try:
            doc = (
                _fetch(location, settings=settings, report=report)
                if is_url(location)
                else read_document(location)
            )
            if not isinstance(doc, Mapping):
                raise ConfigError("not a JSON object")
            kind = kind or ranges.detect(doc)
            table = ranges.parse(doc, provider=kind)
        except (OSError, ValueError, ConfigError, AttributeError, TypeError, yaml.YAMLError) as exc:
            log.warning("range source %s skipped: %s", source, exc)
            report.failed[source] = str(exc)
            continue
        report.loaded[source] = len(table)
        parsed.append((kind, table))
    return ranges.merge(parsed)


def load_user(paths: Sequence[str]) -> list[ranges.UserRange]:
    """User entries from every file; unlike provider data these are configuration: errors are fatal."""
    out: list[ranges.UserRange] = []
    for path in paths:
        try:
            doc = read_document(path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"custom ranges {path}: {exc}") from None
        out.extend(ranges.parse_user(doc))
    return out


def load_table(
    settings: RangeSettings, *, private: Sequence[str], report: LoadReport | None = None
) -> PrefixTable[ranges.Range]:
    """Load every source and build the lookup table (a missing source degrades, never fails)."""
    report = report if report is not None else LoadReport()
    provider = load_provider(settings, report)
    table = ranges.build_table(provider, private=private, user=load_user(settings.custom))
    log.info(
        "cloud ranges: %d prefixes from %d sources (%d failed, %d from cache), %d segments",
        table.prefixes,
        len(report.loaded),
        len(report.failed),
        len(report.cached),
        table.segments,
    )
    return table
