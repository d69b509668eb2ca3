"""Settings of the ClickHouse side: where the flows database is, and how the writer batches into it.

Built once at the entry point from flags (and their ``KUBENETMON_*`` variables) and passed down.
Secrets are read here, at the edge, so the password of a DSN, a file or the environment reaches the
sink as a value and is never logged: ``ClickHouseSettings`` hides it from ``repr``.

This module must not import clickhouse_connect (only the sink does) nor open any connection.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import add_arguments, from_args, option, require, require_readable

_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CLUSTER: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ClickHouseSettings:
    """Where the flows table lives: a ClickHouse server over HTTP(S), or an embedded chDB directory."""

    dsn: str = option(
        "",
        flag="--clickhouse-dsn",
        metavar="DSN",
        help="http(s)://user[:password]@host:port[/database] or chdb:///absolute/data/dir",
    )
    database: str = option(
        "",
        flag="--database",
        metavar="NAME",
        help="database of the flows table (default: the DSN's, else kubenetmon)",
    )
    table: str = option(
        "network_flows_0", flag="--table", metavar="NAME", help="flows table; its exact view is <table>_exact"
    )
    user: str = option("", flag="--clickhouse-user", metavar="USER", help="user name (overrides the DSN's)")
    password: str = option(
        "",
        flag="--clickhouse-password",
        metavar="PASSWORD",
        help="password (overrides the DSN's)",
        secret=True,
        repr=False,
    )
    password_file: str = option(
        "",
        flag="--clickhouse-password-file",
        metavar="FILE",
        help="file holding the password (wins over the others)",
    )
    ca_cert: str = option(
        "", flag="--clickhouse-ca-cert", metavar="FILE", help="CA bundle (PEM) that signs the server's cert"
    )
    client_cert: str = option(
        "", flag="--clickhouse-client-cert", metavar="FILE", help="client certificate (PEM), mutual TLS"
    )
    client_key: str = option(
        "", flag="--clickhouse-client-key", metavar="FILE", help="key of --clickhouse-client-cert"
    )
    verify: bool = option(
        True, flag="--clickhouse-verify", kind="bool", help="verify the server's certificate"
    )
    connect_timeout_s: float = option(
        10.0, flag="--clickhouse-connect-timeout", kind="duration", help="one connection attempt"
    )
    timeout_s: float = option(
        300.0, flag="--clickhouse-timeout", kind="duration", help="one query or insert, send and receive"
    )
    ttl_days: int = option(
        90,
        flag="--ttl-days",
        kind="int",
        help="days a flow row or report row is kept (0: forever); applied by migrate",
    )
    cluster: str = option(
        "",
        flag="--clickhouse-cluster",
        metavar="NAME",
        help="self-managed ClickHouse cluster (its remote_servers name): migrations ON CLUSTER, replicated "
        "local tables behind Distributed ones (not for ClickHouse Cloud; see README)",
    )

    def __post_init__(self) -> None:
        require(self, "dsn", bool(self.dsn), "a DSN")
        require(self, "database", not self.database or bool(_IDENT.match(self.database)), "an identifier")
        require(self, "table", bool(_IDENT.match(self.table)), "an identifier")
        require(
            self, "client_key", not self.client_key or bool(self.client_cert), "--clickhouse-client-cert too"
        )
        require(self, "connect_timeout_s", self.connect_timeout_s > 0, "a positive duration")
        require(self, "timeout_s", self.timeout_s > 0, "a positive duration")
        require(self, "ttl_days", 0 <= self.ttl_days <= 36500, "days from 0 to 36500")
        require(
            self,
            "cluster",
            not self.cluster or bool(_CLUSTER.match(self.cluster)),
            "a cluster name (A-Z a-z 0-9 _ . -)",
        )
        require(
            self,
            "cluster",
            not self.cluster or not self.dsn.startswith("chdb:"),
            "no cluster with a chdb:// DSN (chDB is one embedded server)",
        )

    def with_secret(self) -> ClickHouseSettings:
        """The same settings with ``password`` read from ``password_file``, if one is named."""
        if not self.password_file:
            return self
        try:
            secret = Path(self.password_file).read_text().strip("\r\n")
        except OSError as exc:
            raise ConfigError(f"--clickhouse-password-file: cannot read it ({exc.strerror})") from None
        return replace(self, password=secret)

    def check_files(self) -> ClickHouseSettings:
        """These settings, once their TLS files are known to be readable (else ``ConfigError``).

        A missing CA or certificate is a configuration error, which retrying the connection (as for
        an unreachable server) could never fix.
        """
        require_readable(
            [
                ("--clickhouse-ca-cert", self.ca_cert),
                ("--clickhouse-client-cert", self.client_cert),
                ("--clickhouse-client-key", self.client_key),
            ]
        )
        return self


@dataclass(frozen=True)
class WriterSettings:
    """How a writer process batches ENRICHED rows into the table."""

    batch_rows: int = option(50_000, flag="--batch-rows", kind="int", help="rows that close a batch")
    batch_age_s: float = option(
        2.0, flag="--batch-age", kind="duration", help="age of the oldest row that closes a batch"
    )
    fetch_size: int = option(
        100, flag="--fetch-size", kind="int", help="messages asked for in one fetch from ENRICHED"
    )
    retry_min_s: float = option(
        0.5, flag="--retry-min", kind="duration", help="first delay before retrying a failed insert (doubles)"
    )
    retry_max_s: float = option(
        15.0, flag="--retry-max", kind="duration", help="longest delay between insert retries"
    )
    keepalive_s: float = option(
        5.0,
        flag="--keepalive",
        kind="duration",
        help="in-progress signal interval for messages of an open batch (below the ack wait)",
    )
    migrate: bool = option(True, flag="--migrate", kind="bool", help="create or upgrade the schema at start")
    query_endpoint: bool = option(
        True,
        flag="--query-endpoint",
        kind="bool",
        help="with chdb://, serve read-only queries to `sql`/`top` on a loopback port",
    )

    def __post_init__(self) -> None:
        require(self, "batch_rows", 1 <= self.batch_rows <= 10_000_000, "an integer from 1 to 10000000")
        require(self, "batch_age_s", self.batch_age_s > 0, "a positive duration")
        require(self, "fetch_size", 1 <= self.fetch_size <= 10_000, "an integer from 1 to 10000")
        require(self, "retry_min_s", self.retry_min_s > 0, "a positive duration")
        require(self, "retry_max_s", self.retry_max_s >= self.retry_min_s, ">= --retry-min")
        require(self, "keepalive_s", self.keepalive_s > 0, "a positive duration")


def add_clickhouse_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, ClickHouseSettings, title="ClickHouse")


def clickhouse_settings(args: argparse.Namespace) -> ClickHouseSettings:
    """Validated settings with the password resolved (file > flag/env > DSN)."""
    return from_args(ClickHouseSettings, args).with_secret().check_files()


def add_writer_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, WriterSettings, title="batching")


def writer_settings(args: argparse.Namespace) -> WriterSettings:
    return from_args(WriterSettings, args)
