"""Prometheus metrics and the small HTTP server that serves ``/metrics``, ``/healthz`` and ``/readyz``.

Metric helpers add the ``kubenetmon_`` prefix so names stay consistent across stages; use base units
and a ``_total`` suffix for counters (``counter("messages_total", ...)``). In a worker pool every
process writes its samples to the directory named by ``PROMETHEUS_MULTIPROC_DIR`` (set by the
supervisor before it spawns workers; prometheus-client reads it at import) and the supervisor serves
the aggregate; a single process (the agent) serves its own registry.

The HTTP server runs in a daemon thread so it answers even while an event loop is busy; the health and
readiness callables it is given are therefore called from that thread and must only read state.
This module must not import any service nor know what "ready" means for one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final, Literal

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import HttpSettings

log = logging.getLogger(__name__)

PREFIX: Final = "kubenetmon_"
GaugeMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent"]
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(PREFIX + name.removesuffix("_total"), doc, labelnames=tuple(labels))


def gauge(name: str, doc: str, labels: Sequence[str] = (), *, mode: GaugeMode = "livesum") -> Gauge:
    """A gauge; ``mode`` says how a pool's processes combine (default: sum over live processes)."""
    return Gauge(PREFIX + name, doc, labelnames=tuple(labels), multiprocess_mode=mode)


def histogram(
    name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float] = DURATION_BUCKETS
) -> Histogram:
    return Histogram(PREFIX + name, doc, labelnames=tuple(labels), buckets=tuple(buckets))


def exposition(multiprocess_dir: str | None = None, extra: Sequence[Collector] = ()) -> bytes:
    """The text exposition: this process's registry, or the aggregate of a pool's directory (+ ``extra``)."""
    if not multiprocess_dir:
        return _generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    for collector in extra:
        registry.register(collector)
    return _generate_latest(registry)


class HttpServer:
    """``/metrics``, ``/healthz`` (200 while ``healthy()``), ``/readyz`` (200 while ``ready()``)."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        multiprocess_dir: str | None = None,
        extra: Sequence[Collector] = (),
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, exposition(multiprocess_dir, extra)),
            "/healthz": lambda: _probe(healthy),
            "/readyz": lambda: _probe(ready),
        }
        self._server = ThreadingHTTPServer((settings.host, settings.port), _handler(routes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("serving /metrics, /healthz, /readyz", extra={"port": self.port})
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def serve(
    settings: HttpSettings,
    *,
    healthy: Callable[[], bool],
    ready: Callable[[], bool],
    multiprocess_dir: str | None = None,
    extra: Sequence[Collector] = (),
) -> HttpServer | None:
    """Start the server in a thread (``None`` when the port is -1, i.e. turned off)."""
    if settings.port < 0:
        return None
    try:
        server = HttpServer(
            settings, healthy=healthy, ready=ready, multiprocess_dir=multiprocess_dir, extra=extra
        )
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise ConfigError(f"--http-host/--http-port: cannot listen on {where}: {exc}") from None
    return server.start()


def _probe(check: Callable[[], bool]) -> tuple[int, str, bytes]:
    try:
        ok = bool(check())
    except Exception:  # a probe that raises is a failing probe, never a dead server
        log.exception("probe failed")
        ok = False
    return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"not ok\n")


def _handler(routes: dict[str, Callable[[], tuple[int, str, bytes]]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not logged
            return

    return Handler
