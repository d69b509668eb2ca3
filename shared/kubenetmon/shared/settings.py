"""Settings shared by every service, one frozen dataclass per concern, each field with its unit.

A service's ``configure(parser)`` calls ``add_nats_arguments(parser)`` (and the others it needs); its
``main(args)`` calls ``nats_settings(args)`` once and passes the result down. Library code receives
settings objects and never reads flags or the environment. Constructing a settings object validates it,
so a bad value fails at start with a ``ConfigError`` naming the flag, not later in the middle of the work.

This module must not import any client library: it describes configuration, nothing more.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff
from kubenetmon.shared.options import add_arguments, from_args, option, require

_STREAM_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT: Final = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_URL: Final = re.compile(r"^(nats|tls|ws|wss)://[^\s/]+/?$")
_MIB: Final = 1024**2
_GIB: Final = 1024**3
_DAY: Final = 86400.0


def default_data_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/kubenetmon``, else ``~/.local/share/kubenetmon``."""
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "kubenetmon")


@dataclass(frozen=True)
class NatsSettings:
    """Connection to NATS and the JetStream topology (``{stream_prefix}_RAW|_ENRICHED|_DLQ|_META``)."""

    urls: tuple[str, ...] = option(
        ("nats://127.0.0.1:4222",),
        flag="--nats-url",
        metavar="URL",
        kind="list",
        help="NATS server URLs, comma-separated",
    )
    user: str = option(
        "", flag="--nats-user", metavar="USER", help="user name for user/password authentication"
    )
    password: str = option(
        "", flag="--nats-password", metavar="PASSWORD", help="password for --nats-user", secret=True
    )
    token: str = option("", flag="--nats-token", metavar="TOKEN", help="authentication token", secret=True)
    token_file: str = option(
        "",
        flag="--nats-token-file",
        metavar="FILE",
        help="path of a file holding the authentication token, read again at every (re)connect "
        "(a projected ServiceAccount token, which the kubelet rotates)",
        secret=False,  # a path; the token itself is never shown
    )
    creds_file: str = option(
        "", flag="--nats-creds", metavar="FILE", help="path of a NATS credentials (.creds) file"
    )
    tls_ca: str = option(
        "",
        flag="--nats-tls-ca",
        metavar="FILE",
        help="path of the CA bundle that signs the server certificate",
    )
    tls_cert: str = option(
        "", flag="--nats-tls-cert", metavar="FILE", help="path of the client certificate (mutual TLS)"
    )
    tls_key: str = option(
        "", flag="--nats-tls-key", metavar="FILE", help="path of the client certificate's key"
    )
    stream_prefix: str = option(
        "KUBENETMON", flag="--nats-stream-prefix", metavar="PREFIX", help="prefix of the stream names"
    )
    subject_prefix: str = option(
        "kubenetmon", flag="--nats-subject-prefix", metavar="PREFIX", help="first token(s) of every subject"
    )
    raw_max_age_s: float = option(
        7 * _DAY, flag="--nats-raw-max-age", kind="duration", help="RAW retention, age"
    )
    raw_max_bytes: int = option(
        2 * _GIB, flag="--nats-raw-max-bytes", kind="size", help="RAW retention, bytes (then refused)"
    )
    enriched_max_age_s: float = option(
        2 * _DAY, flag="--nats-enriched-max-age", kind="duration", help="ENRICHED retention, age"
    )
    enriched_max_bytes: int = option(
        _GIB,
        flag="--nats-enriched-max-bytes",
        kind="size",
        help="ENRICHED retention, bytes (then the writers trim what they stored, or refused)",
    )
    dlq_max_age_s: float = option(
        14 * _DAY, flag="--nats-dlq-max-age", kind="duration", help="DLQ retention, age"
    )
    dlq_max_bytes: int = option(
        256 * _MIB, flag="--nats-dlq-max-bytes", kind="size", help="DLQ retention, bytes (then refused)"
    )
    meta_max_age_s: float = option(
        8 * _DAY,
        flag="--nats-meta-max-age",
        kind="duration",
        help="META (metadata history) retention, age: above the RAW retention plus a snapshot period",
    )
    meta_max_bytes: int = option(
        512 * _MIB,
        flag="--nats-meta-max-bytes",
        kind="size",
        help="META (metadata history) retention, bytes (then refused)",
    )
    replicas: int = option(1, flag="--nats-replicas", kind="int", help="stream replicas (1 to 5)")
    storage: str = option("file", flag="--nats-storage", choices=("file", "memory"), help="stream storage")
    duplicate_window_s: float = option(
        600.0,
        flag="--nats-duplicate-window",
        kind="duration",
        help="window in which a Nats-Msg-Id is deduplicated",
    )
    max_ack_pending: int = option(
        1000,
        flag="--nats-max-ack-pending",
        kind="int",
        help="messages in flight per durable consumer, all workers",
    )
    max_deliver: int = option(
        10, flag="--nats-max-deliver", kind="int", help="deliveries of one message before it goes to the DLQ"
    )
    ack_wait_s: float = option(
        30.0,
        flag="--nats-ack-wait",
        kind="duration",
        help="time a worker has to settle a message before redelivery",
    )
    backoff_s: tuple[float, ...] = option(
        (1.0, 5.0, 15.0, 30.0, 60.0),
        flag="--nats-backoff",
        kind="durations",
        help="redelivery delay after the 1st, 2nd, ... failed delivery (the last one repeats)",
    )
    publish_timeout_s: float = option(
        5.0,
        flag="--nats-publish-timeout",
        kind="duration",
        help="wait for a JetStream publish acknowledgement",
    )
    connect_timeout_s: float = option(
        5.0, flag="--nats-connect-timeout", kind="duration", help="one connection attempt"
    )
    reconnect_wait_s: float = option(
        0.5, flag="--nats-reconnect-wait", kind="duration", help="first reconnect delay (doubles per failure)"
    )
    reconnect_max_wait_s: float = option(
        10.0, flag="--nats-reconnect-max-wait", kind="duration", help="longest reconnect delay"
    )
    ping_interval_s: float = option(
        20.0,
        flag="--nats-ping-interval",
        kind="duration",
        help="ping the server this often; two unanswered pings mean it hangs: reconnect to another",
    )

    def __post_init__(self) -> None:
        require(self, "token_file", not (self.token and self.token_file), "--nats-token or a token file")
        require(
            self, "urls", bool(self.urls) and all(_URL.match(u) for u in self.urls), "nats://host:port[,...]"
        )
        require(
            self, "stream_prefix", bool(_STREAM_TOKEN.match(self.stream_prefix)), "letters, digits, - or _"
        )
        require(
            self, "subject_prefix", bool(_SUBJECT.match(self.subject_prefix)), "dot-separated subject tokens"
        )
        require(
            self,
            "tls_key",
            bool(self.tls_key) == bool(self.tls_cert),
            "both --nats-tls-cert and --nats-tls-key",
        )
        require(
            self, "password", not self.password or bool(self.user), "--nats-user together with a password"
        )
        for kind in ("raw", "enriched", "dlq", "meta"):
            age = f"{kind}_max_age_s"
            require(self, age, getattr(self, age) > 0, "a positive duration")
            require(self, f"{kind}_max_bytes", getattr(self, f"{kind}_max_bytes") >= -1, "bytes > 0 or -1")
            require(self, f"{kind}_max_bytes", getattr(self, f"{kind}_max_bytes") != 0, "bytes > 0 or -1")
            require(
                self,
                "duplicate_window_s",
                self.duplicate_window_s <= getattr(self, age),
                f"a duration no longer than --nats-{kind}-max-age",
            )
        require(self, "replicas", 1 <= self.replicas <= 5, "an integer from 1 to 5")
        require(self, "duplicate_window_s", self.duplicate_window_s > 0, "a positive duration")
        require(self, "max_ack_pending", self.max_ack_pending >= 1, "an integer >= 1")
        require(self, "max_deliver", self.max_deliver >= 2, "an integer >= 2 (one delivery plus retries)")
        require(self, "ack_wait_s", self.ack_wait_s >= 1, "a duration of at least 1s")
        require(self, "backoff_s", bool(self.backoff_s) and min(self.backoff_s) > 0, "positive durations")
        require(
            self, "backoff_s", len(self.backoff_s) < self.max_deliver, "fewer delays than --nats-max-deliver"
        )
        for name in (
            "publish_timeout_s",
            "connect_timeout_s",
            "reconnect_wait_s",
            "reconnect_max_wait_s",
            "ping_interval_s",
        ):
            require(self, name, getattr(self, name) > 0, "a positive duration")

    @property
    def raw_stream(self) -> str:
        return f"{self.stream_prefix}_RAW"

    @property
    def enriched_stream(self) -> str:
        return f"{self.stream_prefix}_ENRICHED"

    @property
    def dlq_stream(self) -> str:
        return f"{self.stream_prefix}_DLQ"

    @property
    def meta_stream(self) -> str:
        return f"{self.stream_prefix}_META"

    def backoff_delay(self, num_delivered: int) -> float:
        """Redelivery delay in seconds after delivery number ``num_delivered`` (1-based) failed."""
        return backoff.from_table(self.backoff_s, num_delivered)


@dataclass(frozen=True)
class LogSettings:
    level: str = option(
        "info", flag="--log-level", choices=("debug", "info", "warning", "error"), help="lowest level logged"
    )
    format: str = option(
        "auto",
        flag="--log-format",
        choices=("auto", "json", "text"),
        help="JSON lines or plain text; auto: text when stderr is a terminal, else JSON",
    )


@dataclass(frozen=True)
class HttpSettings:
    """The metrics/health endpoint: ``/metrics``, ``/healthz``, ``/readyz``."""

    host: str = option(
        "0.0.0.0",
        flag="--http-host",
        metavar="HOST",
        aliases=("--metrics-host",),
        help="address the metrics/health server listens on",
    )
    port: int = option(
        9090,
        flag="--http-port",
        aliases=("--metrics-port",),
        kind="int",
        help="its TCP port (0: any free port, -1: off)",
    )

    def __post_init__(self) -> None:
        require(self, "port", -1 <= self.port <= 65535, "a port from 0 to 65535, or -1")
        require(self, "host", bool(self.host.strip()), "an address")


@dataclass(frozen=True)
class RuntimeSettings:
    drain_timeout_s: float = option(
        25.0,
        flag="--drain-timeout",
        kind="duration",
        help="after SIGTERM, time to finish in-flight work before exiting (below the pod's grace period)",
    )

    def __post_init__(self) -> None:
        require(self, "drain_timeout_s", self.drain_timeout_s > 0, "a positive duration")


@dataclass(frozen=True)
class PoolSettings:
    """A supervisor and its worker processes."""

    workers: int = option(1, flag="--workers", kind="int", help="worker processes in this pod")
    max_crashes: int = option(
        5,
        flag="--max-crashes",
        kind="int",
        help="crashes within --crash-window after which the pod exits non-zero",
    )
    crash_window_s: float = option(
        60.0, flag="--crash-window", kind="duration", help="window for --max-crashes"
    )
    respawn_backoff_s: float = option(
        0.5,
        flag="--respawn-backoff",
        kind="duration",
        help="first respawn delay of a crashed worker (doubles)",
    )
    respawn_backoff_max_s: float = option(
        30.0, flag="--respawn-backoff-max", kind="duration", help="longest respawn delay"
    )
    metrics_dir: str = option(
        "",
        flag="--metrics-dir",
        metavar="DIR",
        help="Prometheus multiprocess directory (default: a fresh temporary directory)",
    )

    def __post_init__(self) -> None:
        require(self, "workers", 1 <= self.workers <= 256, "an integer from 1 to 256")
        require(self, "max_crashes", self.max_crashes >= 1, "an integer >= 1")
        require(self, "crash_window_s", self.crash_window_s > 0, "a positive duration")
        require(self, "respawn_backoff_s", self.respawn_backoff_s > 0, "a positive duration")
        require(
            self,
            "respawn_backoff_max_s",
            self.respawn_backoff_max_s >= self.respawn_backoff_s,
            ">= --respawn-backoff",
        )


TOPOLOGY_ONLY: Final = (
    *(f"{kind}_max_{limit}" for kind in ("raw", "enriched", "dlq", "meta") for limit in ("age_s", "bytes")),
    "replicas",
    "storage",
    "duplicate_window_s",
)
"""``NatsSettings`` fields that only shape the streams ``nats init`` (or a service at start) creates."""


def add_nats_arguments(parser: argparse.ArgumentParser, *, topology: bool = True) -> None:
    """The NATS flags; ``topology=False``: ``--help`` shows only those a client of an existing topology
    uses (replay), the others are still accepted, so a shared command line or environment works unchanged."""
    add_arguments(parser, NatsSettings, title="NATS", hidden=() if topology else TOPOLOGY_ONLY)


def nats_settings(args: argparse.Namespace) -> NatsSettings:
    return from_args(NatsSettings, args)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, LogSettings, title="logging")


def log_settings(args: argparse.Namespace) -> LogSettings:
    return from_args(LogSettings, args)


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, HttpSettings, title="metrics and health")


def http_settings(args: argparse.Namespace) -> HttpSettings:
    return from_args(HttpSettings, args)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, RuntimeSettings, title="shutdown")


def runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    return from_args(RuntimeSettings, args)


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, PoolSettings, title="worker pool")


def pool_settings(args: argparse.Namespace) -> PoolSettings:
    return from_args(PoolSettings, args)


ALL_SETTINGS: Final = (NatsSettings, LogSettings, HttpSettings, RuntimeSettings, PoolSettings)
"""Every shared concern, in README order (``options.reference(*ALL_SETTINGS)``)."""
