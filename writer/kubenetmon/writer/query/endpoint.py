"""Read-only queries into a chDB directory that another process owns.

chDB lets one process open a data directory. The writer that owns one therefore serves read-only
queries on a loopback HTTP port and announces it in ``<dir>/kubenetmon-endpoint.json`` (pid, port and a
random token, readable by the owner's user only). ``sql`` and ``top`` find a live owner there and ask it
instead of opening the directory, which would fail or, worse, race the writer.

Queries run with ``readonly=2``: no insert, DDL or ``SET readonly`` gets through. Values cross as JSON
(numbers stay numbers; dates, times and addresses become strings), the same shape ``run_query`` gives
when it opens a directory itself. This module never writes rows and never opens a directory itself: the
owner hands it a ``Sink`` factory.
"""

from __future__ import annotations

import datetime
import decimal
import http.client
import ipaddress
import json
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from kubenetmon.shared.errors import KubenetmonError
from kubenetmon.writer.sink import QueryFailed, QueryResult, Sink, SinkUnavailable

log = logging.getLogger(__name__)

ENDPOINT_FILE: Final = "kubenetmon-endpoint.json"
READ_ONLY: Final = {"readonly": 2}
_MAX_QUERY_BYTES: Final = 1 << 20


class EndpointUnreachable(SinkUnavailable):
    """Nobody answered on the announced port (the owner died, or its pid now names another process)."""


@dataclass(frozen=True)
class Endpoint:
    pid: int
    port: int
    token: str


def endpoint_file(data_dir: str) -> Path:
    return Path(data_dir) / ENDPOINT_FILE


def live_endpoint(data_dir: str) -> Endpoint | None:
    """The endpoint of the process that owns ``data_dir``, if the file names one that is alive."""
    try:
        raw = json.loads(endpoint_file(data_dir).read_text())
        found = Endpoint(pid=int(raw["pid"]), port=int(raw["port"]), token=str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if found.pid == os.getpid():
        return found
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user: the token decides
    return found


def plain(value: Any) -> Any:
    """A query value as JSON-safe data (the one representation both read paths return)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def plain_result(result: QueryResult) -> QueryResult:
    return QueryResult(result.columns, [tuple(plain(v) for v in row) for row in result.rows])


def ask(endpoint: Endpoint, query: str, *, timeout: float = 300.0) -> QueryResult:
    """Run ``query`` through the owner's endpoint; errors are ``QueryFailed`` or ``SinkUnavailable``."""
    body = json.dumps({"query": query}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/query",
            body=body,
            headers={"Authorization": f"Bearer {endpoint.token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        payload = json.loads(response.read() or b"{}")
    except ConnectionRefusedError:
        raise EndpointUnreachable(f"nothing listens on the announced query port {endpoint.port}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise SinkUnavailable(f"the query endpoint on port {endpoint.port} did not answer: {exc}") from None
    finally:
        conn.close()
    if response.status == 200:
        return QueryResult(list(payload["columns"]), [tuple(r) for r in payload["rows"]])
    message = str(payload.get("error", f"HTTP {response.status}"))
    if response.status == 400:
        raise QueryFailed(message)
    raise SinkUnavailable(message)


class QueryServer:
    """The owner's side: a loopback HTTP server running read-only queries on its own ``Sink``."""

    def __init__(self, data_dir: str, sink_factory: Callable[[], Sink]) -> None:
        self.data_dir = data_dir
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self._lock = threading.Lock()
        self._token = secrets.token_urlsafe(24)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="query-endpoint", daemon=True)
        self._thread.start()
        self._announce()
        log.info(
            "serving read-only queries for sql/top", extra={"port": self.port, "data_dir": self.data_dir}
        )

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            if live_endpoint(self.data_dir) == Endpoint(os.getpid(), self.port, self._token):
                endpoint_file(self.data_dir).unlink(missing_ok=True)
        except OSError:
            log.debug("could not remove the endpoint file", exc_info=True)
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            if self._sink is not None:
                self._sink.close()
                self._sink = None

    def run(self, query: str) -> QueryResult:
        """Run one read-only query (serialised: one handle, one query at a time)."""
        with self._lock:
            if self._sink is None:
                self._sink = self._sink_factory()
            return plain_result(self._sink.query(query, settings=READ_ONLY))

    def authorised(self, header: str | None) -> bool:
        return secrets.compare_digest(header or "", f"Bearer {self._token}")

    def _announce(self) -> None:
        path = endpoint_file(self.data_dir)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": self.port, "token": self._token}, f)
        os.replace(tmp, path)


def _handler(owner: QueryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/query" or not owner.authorised(self.headers.get("Authorization")):
                self._reply(403 if self.path == "/query" else 404, {"error": "forbidden"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= _MAX_QUERY_BYTES:
                    raise ValueError("bad length")
                query = str(json.loads(self.rfile.read(length))["query"])
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": 'expected a JSON body {"query": "..."}'})
                return
            try:
                result = owner.run(query)
            except QueryFailed as exc:
                self._reply(400, {"error": str(exc)})
            except KubenetmonError as exc:
                self._reply(503, {"error": str(exc)})
            else:
                self._reply(200, {"columns": result.columns, "rows": result.rows})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("query endpoint: " + format, *args)

    return Handler
