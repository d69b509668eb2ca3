"""ClickHouse DSNs: parsing, validation and redaction, with no client attached.

``http(s)://user:password@host:port/database`` names a ClickHouse server; ``chdb:///absolute/path`` an
embedded chDB data directory. A ``Target`` keeps the password apart from ``display``, the only form
that may be logged. Options travel as ``--clickhouse-*`` flags, never as DSN query strings.
Pure: no I/O, no client library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, unquote, urlsplit

from kubenetmon.shared.errors import ConfigError

_DEFAULT_PORTS: Final = {"http": 8123, "https": 8443}


@dataclass(frozen=True)
class Target:
    """A parsed, validated DSN. ``display`` is safe to log; ``password`` is not."""

    kind: str
    """``http`` (either scheme) or ``chdb``."""
    display: str
    path: str = ""
    """chDB data directory (absolute)."""
    scheme: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    database: str = ""
    """Database named in the DSN path, if any."""


def parse_dsn(dsn: str) -> Target:
    """Validate a DSN; raise ``ConfigError`` (showing it redacted) if it is not one we support."""
    try:
        parts = urlsplit(dsn.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--clickhouse-dsn {redact(dsn)}: {exc}") from None
    shown = redact(dsn)
    if parts.query or parts.fragment:
        raise ConfigError(f"--clickhouse-dsn {shown}: no ?options; use the --clickhouse-* flags")
    if parts.scheme == "chdb":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(f"--clickhouse-dsn {shown}: expected chdb:///absolute/data/dir")
        return Target(kind="chdb", display=shown, path=os.path.normpath(unquote(parts.path)))
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            f"--clickhouse-dsn {shown}: expected http(s)://user:password@host:port/db or chdb:///path"
        )
    database = unquote(parts.path.strip("/"))
    if "/" in database:
        raise ConfigError(f"--clickhouse-dsn {shown}: the path names one database, nothing more")
    return Target(
        kind="http",
        display=shown,
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[parts.scheme],
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
    )


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
    except ValueError:
        return "<unparsable DSN>"
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
