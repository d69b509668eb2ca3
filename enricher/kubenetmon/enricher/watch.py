"""List and watch Pods, Nodes and Services with the official Kubernetes client; feed the index.

Why it exists: the index must follow the cluster. Per kind, a thread lists (paginated), hands the full
list over, then watches from the list's ``resourceVersion``; a ``410 Gone`` (an ``ERROR`` event or an
HTTP status) means the history is gone: relist at once. Any other failure reconnects with a doubling
backoff, resuming from the last version seen. The client is synchronous, so it runs in threads and
never blocks an event loop; updates leave through ``deliver`` (the caller moves them onto its loop).

This module and ``kubeauth`` (the auth service's two API calls) are the only ones that import
``kubernetes``. It must not touch the index itself: it hands plain dicts (the API's JSON, never the
client's models) to ``deliver``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from kubenetmon.enricher.index import KINDS, Index
from kubenetmon.shared import backoff
from kubenetmon.shared.errors import ConfigError

log = logging.getLogger(__name__)

GONE: Final = 410
LISTED: Final = "LISTED"


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How the index follows the API server."""

    kubeconfig: str = ""
    """Path of a kubeconfig file; empty: in-cluster service account, else the default kubeconfig."""
    context: str = ""
    """kubeconfig context; empty: the current one."""
    page_size: int = 500
    """Objects per list page."""
    watch_timeout_s: float = 300.0
    """Server-side timeout of one watch request, seconds (it is then resumed)."""
    request_timeout_s: float = 30.0
    """Timeout of a list page, and connect timeout of a watch, seconds."""
    backoff_s: float = 0.5
    """First reconnect delay after a failure, seconds (doubles per failure in a row)."""
    backoff_max_s: float = 30.0
    """Longest reconnect delay, seconds."""


class Update(NamedTuple):
    """``LISTED`` with every object of ``kind``, or one watch event (``ADDED``/``MODIFIED``/``DELETED``)."""

    kind: str
    event: str
    objects: list[dict[str, Any]]
    at: float
    """Unix seconds when it was received."""


Deliver = Callable[[Update], None]


def apply(index: Index, update: Update) -> None:
    """Feed one update to the index (call it on the thread that owns the index)."""
    if update.event == LISTED:
        index.replace(update.kind, update.objects, now=update.at)
    else:
        for obj in update.objects:
            index.apply(update.kind, update.event, obj, now=update.at)


def api_client(settings: WatchSettings, *, retries: int | None = None) -> client.ApiClient:
    """An API client from the kubeconfig, or in-cluster credentials, or the default kubeconfig.

    ``retries``: attempts again per request after a connection failure (None: urllib3's default, 3)."""
    cfg = client.Configuration()
    cfg.retries = retries
    try:
        if settings.kubeconfig:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=settings.kubeconfig,
                context=settings.context or None,
                client_configuration=cfg,
                persist_config=False,
            )
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    context=settings.context or None, client_configuration=cfg, persist_config=False
                )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"no Kubernetes credentials: {exc}") from None
    return client.ApiClient(cfg)


class _Gone(Exception):
    """The watch's resource version is too old: relist."""


class Watcher:
    """One kind: list, then watch; run in its own thread (``run``), stopped by ``close``."""

    def __init__(
        self, api: client.ApiClient, kind: str, deliver: Deliver, *, settings: WatchSettings
    ) -> None:
        core = client.CoreV1Api(api)
        calls: dict[str, Callable[..., Any]] = {
            "pods": core.list_pod_for_all_namespaces,
            "nodes": core.list_node,
            "services": core.list_service_for_all_namespaces,
        }
        self._call = calls[kind]
        self.kind = kind
        self.deliver = deliver
        self.settings = settings
        self.stop = threading.Event()
        self.lists = 0
        self.events = 0
        self.failures = 0
        self._response: Any = None

    def run(self) -> None:
        version: str | None = None
        failures = 0
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                failures = 0
            except _Gone:
                log.info("%s: resource version expired; relisting", self.kind)
                version = None
            except Exception as exc:  # any client, HTTP or decoding failure: back off, then resume
                if self.stop.is_set():
                    break
                failures += 1
                self.failures += 1
                delay = backoff.exponential(
                    failures - 1, base_s=self.settings.backoff_s, max_s=self.settings.backoff_max_s
                )
                if isinstance(exc, ApiException) and exc.status == GONE:
                    version, delay = None, 0.0
                log.warning(
                    "%s: watch failed (%d in a row): %r; retrying in %.1fs", self.kind, failures, exc, delay
                )
                self.stop.wait(delay)

    def close(self) -> None:
        """Stop the thread: set the flag and cut the open stream (from any thread)."""
        self.stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed: nothing to cut
                pass

    def _list(self) -> str:
        # A list is the state at its first page (later pages continue that snapshot), so it is stamped
        # when asked for, not when it arrived: an object missing from it was gone by then, and one another
        # observer saw appear while the list was in flight is not ended by it (``history`` closes what a
        # LISTED marker lacks unless it was seen after the marker's time).
        asked_at = time.time()
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.settings.page_size}
            if token:
                kwargs["_continue"] = token
            response = self._call(
                _preload_content=False, _request_timeout=self.settings.request_timeout_s, **kwargs
            )
            page = json.loads(response.data)
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.lists += 1
        self.deliver(Update(self.kind, LISTED, items, asked_at))
        log.info(
            "%s: listed %d", self.kind, len(items), extra={"resource_version": meta.get("resourceVersion")}
        )
        return str(meta.get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        """Stream events from ``version`` until the server ends the request; returns the last version."""
        timeout = self.settings.watch_timeout_s
        self._response = response = self._call(
            watch=True,
            resource_version=version,
            timeout_seconds=int(timeout),
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(self.settings.request_timeout_s, timeout + self.settings.request_timeout_s),
        )
        try:
            if self.stop.is_set():  # close() ran before the stream existed: it could not cut it
                return version
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self.stop.is_set():
                    break
                if line:
                    version = self._event(json.loads(line), version)
        finally:
            self._response = None
            response.release_conn()
        return version

    def _event(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == GONE:
                raise _Gone()
            raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.events += 1
            self.deliver(Update(self.kind, kind, [obj], time.time()))
        return new_version


class KubeWatch:
    """One ``Watcher`` thread per kind (Pods, Nodes, Services)."""

    def __init__(self, settings: WatchSettings, deliver: Deliver, *, kinds: tuple[str, ...] = KINDS) -> None:
        self.api = api_client(settings)
        self.watchers = [Watcher(self.api, kind, deliver, settings=settings) for kind in kinds]
        self._threads = [
            threading.Thread(target=w.run, name=f"watch-{w.kind}", daemon=True) for w in self.watchers
        ]

    def start(self) -> KubeWatch:
        for thread in self._threads:
            thread.start()
        return self

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop every watcher and wait up to ``timeout`` seconds for the threads (they are daemons)."""
        for watcher in self.watchers:
            watcher.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.api.close()  # type: ignore[no-untyped-call]
