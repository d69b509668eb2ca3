"""Connection options for the NATS client: servers, credentials, TLS, inboxes, reconnect backoff, events.

Also the error helpers every broker module shares: the tuple of client failures, and a one-line
description of one. This module must not open connections itself; ``client.Broker.connect`` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from kubenetmon.shared import backoff, topology
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import require_readable
from kubenetmon.shared.settings import NatsSettings

log = logging.getLogger(__name__)

_ERROR_LOG_EVERY_S: Final = 30.0
MSG_ID_HEADER: Final = "Nats-Msg-Id"
PINGS_OUTSTANDING: Final = 2
"""Unanswered pings after which the connection is declared stale and re-established."""
CLIENT_ERRORS: Final = (nats.errors.Error, asyncio.TimeoutError, OSError)
"""What the client raises when the broker is unreachable, slow or refuses: all of it is retryable."""


class ConnectionEvents:
    """Connection callbacks: log every disconnect/reconnect, and errors at most every 30 s."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_error = ""
        self.closing = False
        self._last_logged = -_ERROR_LOG_EVERY_S
        self._suppressed = 0

    async def error(self, exc: Exception) -> None:
        self.last_error = describe(exc)
        now = asyncio.get_running_loop().time()
        if now - self._last_logged < _ERROR_LOG_EVERY_S:
            self._suppressed += 1
            return
        log.warning("NATS error: %s (%d similar suppressed)", self.last_error, self._suppressed)
        self._last_logged, self._suppressed = now, 0

    async def disconnected(self) -> None:
        if self.closing:
            return
        log.warning("disconnected from NATS; reconnecting", extra={"connection": self.name})

    async def reconnected(self) -> None:
        log.info("reconnected to NATS", extra={"connection": self.name})

    async def closed(self) -> None:
        log.info("NATS connection closed", extra={"connection": self.name})


def connect_options(
    settings: NatsSettings, *, name: str, events: ConnectionEvents, inbox: str = ""
) -> dict[str, Any]:
    """The client's options; ``inbox``: the reply prefix this connection's grant allows (default: the
    user's, ``inbox_prefix``), as an agent's per-node identity does (``topology.agent_inbox``)."""
    options: dict[str, Any] = {
        "servers": list(settings.urls),
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "connect_timeout": settings.connect_timeout_s,
        # A hung server (stopped, partitioned) keeps the TCP connection open: only unanswered pings
        # reveal it, and then the client moves to another member of the cluster.
        "ping_interval": settings.ping_interval_s,
        "max_outstanding_pings": PINGS_OUTSTANDING,
        "reconnect_to_server_handler": _backoff_handler(settings),
        "error_cb": events.error,
        "disconnected_cb": events.disconnected,
        "reconnected_cb": events.reconnected,
        "closed_cb": events.closed,
        "drain_timeout": max(2.0, settings.publish_timeout_s),
    }
    if settings.user:
        options["user"], options["password"] = settings.user, settings.password
    options["inbox_prefix"] = inbox or inbox_prefix(settings)
    if settings.token:
        options["token"] = settings.token
    if settings.token_file:
        require_readable([("--nats-token-file", settings.token_file)])
        options["token"] = _token_reader(settings.token_file)
    if settings.creds_file:
        if not os.access(settings.creds_file, os.R_OK):  # else the client would retry it forever
            raise ConfigError(f"--nats-creds (KUBENETMON_NATS_CREDS): cannot read {settings.creds_file!r}")
        options["user_credentials"] = settings.creds_file
    if settings.tls_ca or settings.tls_cert or any(u.startswith("tls://") for u in settings.urls):
        options["tls"] = _tls_context(settings)
    return options


def inbox_prefix(settings: NatsSettings) -> str:
    """Where replies to this connection go: ``_INBOX_<user>`` for a named user, else ``_INBOX``.

    Pulled messages and JetStream API answers are sent to the puller's inbox. With one prefix per
    user, the server can let each role subscribe to its own replies only (the shipped nats.conf does):
    with a shared ``_INBOX.>`` any role could read every other role's deliveries.
    """
    user = settings.user or next((urlsplit(u).username for u in settings.urls if urlsplit(u).username), "")
    return f"_INBOX_{topology.subject_token(unquote(user))}" if user else "_INBOX"


def _token_reader(path: str) -> Any:
    """The token in ``path``, read at each connect: a projected ServiceAccount token is rotated in place."""

    def read() -> str:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:  # the server refuses an empty token; the client retries with backoff
            log.warning("cannot read the NATS token file: %s", exc, extra={"path": path})
            return ""

    return read


def preflight(settings: NatsSettings) -> None:
    """Check, without connecting, what retrying could never fix: the credentials file, the TLS material.

    Entry points call it before they start anything, so such a mistake is one ``ConfigError`` line.
    """
    connect_options(settings, name="preflight", events=ConnectionEvents("preflight"))


def _tls_context(settings: NatsSettings) -> ssl.SSLContext:
    require_readable(
        [
            ("--nats-tls-ca", settings.tls_ca),
            ("--nats-tls-cert", settings.tls_cert),
            ("--nats-tls-key", settings.tls_key),
        ]
    )
    try:
        ctx = ssl.create_default_context(cafile=settings.tls_ca or None)
        if settings.tls_cert:
            ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--nats-tls-ca/--nats-tls-cert/--nats-tls-key: cannot load: {exc}") from None
    return ctx


def _backoff_handler(settings: NatsSettings) -> Any:
    """Pick the server that failed least; wait ``reconnect_wait * 2**failures`` (capped, +-20% jitter)."""

    def choose(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        server = min(servers, key=lambda s: s.reconnects)
        if server.reconnects == 0:
            return server, 0.0
        delay = backoff.exponential(
            server.reconnects,
            base_s=settings.reconnect_wait_s,
            max_s=settings.reconnect_max_wait_s,
            max_exponent=16,
        )
        return server, backoff.jittered(delay, spread=0.2)

    return choose


def header_bytes(headers: Mapping[str, str]) -> int:
    """Size of ``headers`` as the client sends them (``NATS/1.0``, ``key: value`` lines, blank line).

    The server counts headers and payload against its max payload; the client checks the payload only.
    """
    lines = sum(
        len(k.strip().encode()) + len(v.strip().encode()) + 4 for k, v in headers.items() if k.strip()
    )
    return len(b"NATS/1.0\r\n\r\n") + lines


def describe(exc: BaseException) -> str:
    if isinstance(exc, nats.js.errors.APIError):
        return f"{type(exc).__name__} {exc.code}/{exc.err_code}: {exc.description}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def quiet_close(nc: Client) -> None:
    try:
        await nc.close()
    except (*CLIENT_ERRORS, RuntimeError) as exc:  # nats-py raises RuntimeError closing while reconnecting
        log.debug("close failed: %s", describe(exc))
