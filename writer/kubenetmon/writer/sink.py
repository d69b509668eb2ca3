"""The one door to ClickHouse: clients, columnar inserts, queries, and what their failures mean.

Both kinds of DSN (parsed by ``dsn``) go through the same code: ``http(s)://...`` reaches a ClickHouse
server, ``chdb:///absolute/path`` opens the embedded engine in this process (chDB allows one process per
data directory; the writer that opens it owns it). Every failure leaves this module as one of
our errors, so callers never look at clickhouse-connect's exceptions:

- ``SinkUnavailable`` (transient): refused or timed-out connections, a chDB directory locked by another
  process, server-side trouble. Retry later; nothing was acknowledged, nothing is lost.
- ``InvalidBatch`` (poison): ClickHouse, or the client encoding for it, rejected the *values*. The batcher
  splits the batch to find the message that carries them.
- ``QueryFailed``: a query or statement (never an insert) that the server refused outright.

Passwords never leave this module in text: DSNs are shown redacted and error messages are scrubbed.
It must not import clickhouse_connect anywhere else, and it knows nothing of NATS or of batching.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import clickhouse_connect
from clickhouse_connect.driver import exceptions as chx

from kubenetmon.shared.errors import ConfigError, KubenetmonError, PoisonError, TransientError
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.settings import ClickHouseSettings

log = logging.getLogger(__name__)
# Every client failure is classified here and reported once, redacted, by our callers; the client's own
# warnings would repeat it with a traceback per attempt.
logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)

DEFAULT_DATABASE: Final = "kubenetmon"
# ClickHouse errors that blame the inserted values, not the server: a smaller batch without the
# offending message would succeed. Anything else is treated as transient (never drop data on a guess).
_DATA_ERRORS: Final = frozenset(
    {
        "CANNOT_PARSE_TEXT",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME",
        "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_BOOL",
        "CANNOT_PARSE_IPV4",
        "CANNOT_PARSE_IPV6",
        "CANNOT_CONVERT_TYPE",
        "TYPE_MISMATCH",
        "UNKNOWN_ELEMENT_OF_ENUM",
        "CANNOT_PARSE_UUID",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
        "UNEXPECTED_DATA_AFTER_PARSED_VALUE",
        "INCORRECT_DATA",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        "ARGUMENT_OUT_OF_BOUND",
        "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
        "TOO_LARGE_STRING_SIZE",
        "DECIMAL_OVERFLOW",
    }
)
_INSERT_SETTINGS: Final = {
    # columns arrive in their wire types (UInt32 for IPv4, String for enums...); the server converts
    "input_format_native_allow_types_conversion": 1,
    # a replay may span many days: never refuse a batch for the number of daily partitions it touches
    "max_partitions_per_insert_block": 0,
    # no replacing within the inserted block: it copies every column of the block once more (about a
    # third of the engine's insert CPU) to drop what a merge or FINAL drops anyway; exact reads go
    # through FINAL (the _exact views), which replaces within a part as across parts
    "optimize_on_insert": 0,
}
# On a cluster the public table is Distributed: an insert returns only once every shard has its rows
# (the default queues them on the receiving server's disk and forwards later, after we acked the batch).
# The older name of distributed_foreground_insert, which every server version knows.
_CLUSTER_INSERT_SETTINGS: Final = {**_INSERT_SETTINGS, "insert_distributed_sync": 1}


# Server errors that say "not now" rather than "never" (a statement failing with another code is wrong).
_BUSY_ERRORS: Final = frozenset(
    {
        "TIMEOUT_EXCEEDED",
        "SOCKET_TIMEOUT",
        "NETWORK_ERROR",
        "TOO_MANY_SIMULTANEOUS_QUERIES",
        "MEMORY_LIMIT_EXCEEDED",
        "TABLE_IS_READ_ONLY",
        "TOO_MANY_PARTS",
        "ALL_CONNECTION_TRIES_FAILED",
        "QUERY_WAS_CANCELLED",
        "KEEPER_EXCEPTION",
        "NOT_ENOUGH_SPACE",
        "ABORTED",
    }
)


_AUTH_ERRORS: Final = frozenset(
    {"AUTHENTICATION_FAILED", "REQUIRED_PASSWORD", "WRONG_PASSWORD", "UNKNOWN_USER"}
)


class QueryFailed(KubenetmonError):
    """ClickHouse answered a query or statement with an error (syntax, permissions, unknown table...)."""


class SinkUnavailable(TransientError):
    """ClickHouse cannot be reached or cannot take writes right now; retry later."""


class InvalidBatch(PoisonError):
    """ClickHouse rejected the values of a batch; some message in it is poison."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_batch", detail)


class QueryResult(NamedTuple):
    columns: list[str]
    rows: list[tuple[Any, ...]]


def chdb_holder(path: str) -> int | None:
    """The pid of another process that holds the chDB directory ``path`` (its ``status`` file's lock).

    ClickHouse locks ``<path>/status`` with ``flock``; ``/proc/locks`` names the holder by inode. A lock
    held by this process is not "another" (chDB allows many clients in one process, on one path).
    """
    try:
        st = os.stat(os.path.join(path, "status"))
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key and fields[4].isdigit():
            pid = int(fields[4])
            if pid != os.getpid():
                return pid
    return None


class Sink:
    """A lazily connected client for one target; reconnects after a transient failure.

    Not thread-safe: use one ``Sink`` per thread of work (chDB allows many in one process, on one path).
    """

    def __init__(self, settings: ClickHouseSettings, *, use_database: bool = False) -> None:
        """``use_database``: unqualified table names in queries resolve in ``self.database`` (readers)."""
        self.settings = settings
        self._use_database = use_database
        self.target = parse_dsn(settings.dsn)
        self.database = settings.database or self.target.database or DEFAULT_DATABASE
        self.table = settings.table
        self._password = settings.password or self.target.password
        self._insert_settings = _CLUSTER_INSERT_SETTINGS if settings.cluster else _INSERT_SETTINGS
        self._client: Any = None

    @property
    def embedded(self) -> bool:
        return self.target.kind == "chdb"

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def connect(self) -> None:
        """Open the client now (it opens on first use otherwise)."""
        self._get()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken client must not hide the error that broke it
                log.debug("closing the ClickHouse client failed", exc_info=True)

    def insert(
        self, table: str, columns: Sequence[Sequence[Any]], *, names: Sequence[str], types: Sequence[str]
    ) -> int:
        """Insert column-oriented data into ``database.table``; return the rows written."""
        rows = len(columns[0]) if columns else 0
        if rows == 0:
            return 0
        self._call(
            "insert",
            table,
            columns,
            database=self.database,
            column_names=list(names),
            column_type_names=list(types),
            column_oriented=True,
            settings=self._insert_settings,
        )
        return rows

    def command(self, sql: str) -> Any:
        """Run a statement (DDL, ALTER...) that returns at most a scalar."""
        return self._call("command", sql)

    def query(self, sql: str, *, settings: Mapping[str, Any] | None = None) -> QueryResult:
        result = self._call("query", sql, settings=dict(settings or {}))
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    # ----------------------------------------------------------------------------------------------

    def _get(self) -> Any:
        if self._client is None:
            holder = chdb_holder(self.target.path) if self.embedded else None
            if holder is not None:  # said before chDB prints its own "Cannot lock file" on stderr
                raise SinkUnavailable(
                    f"{self.target.display}: the chDB directory is held by another process (pid {holder})"
                )
            try:
                self._client = clickhouse_connect.get_client(**self._client_args())
            except Exception as exc:
                raise self._classify(exc, inserting=False) from None
        return self._client

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"database": self.database} if self._use_database else {}
        if self.embedded:
            return {**args, "interface": "chdb", "path": self.target.path}
        t, s = self.target, self.settings
        args |= {
            "interface": t.scheme,
            "host": t.host,
            "port": t.port,
            "username": s.user or t.user or "default",
            "password": self._password,
            "connect_timeout": s.connect_timeout_s,
            "send_receive_timeout": s.timeout_s,
            "autogenerate_session_id": False,
            "query_retries": 0,
            "verify": s.verify,
        }
        for key, value in (
            ("ca_cert", s.ca_cert),
            ("client_cert", s.client_cert),
            ("client_cert_key", s.client_key),
        ):
            if value:
                args[key] = value
        return args

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._get()
        try:
            return getattr(client, method)(*args, **kwargs)
        except Exception as exc:
            error = self._classify(exc, inserting=method == "insert")
            if isinstance(error, SinkUnavailable):
                self.close()
            raise error from None

    def _classify(self, exc: BaseException, *, inserting: bool) -> Exception:
        """Map a client exception to one of our errors (see the module docstring).

        An insert is never ``QueryFailed``: unless the values are to blame, it is retried (never dropped).
        """
        text = self._scrub(str(exc) or type(exc).__name__)
        name = getattr(exc, "name", None) or chx.error_name_from_body(text)
        if inserting and isinstance(exc, (chx.DataError, ValueError, TypeError, OverflowError)):
            return InvalidBatch(text)
        if inserting and name in _DATA_ERRORS:
            return InvalidBatch(text)
        if name in _AUTH_ERRORS and not inserting:  # at connect time: retrying would be refused again
            user = self.settings.user or self.target.user or "default"
            return ConfigError(
                f"{self.target.display}: ClickHouse refused the credentials of user {user!r}: {text}"
            )
        if isinstance(exc, chx.ProgrammingError) and "already initialized with path" in text:
            return ConfigError(f"{self.target.display}: this process already holds another chDB directory")
        if isinstance(exc, chx.ProgrammingError) and "Unable to open the chdb engine" in text:
            return SinkUnavailable(f"{self.target.display}: the chDB directory is held by another process")
        if isinstance(exc, chx.DatabaseError) and exc.code and not inserting and name not in _BUSY_ERRORS:
            return QueryFailed(text)
        if isinstance(exc, (chx.ClickHouseError, OSError)):
            return SinkUnavailable(f"{self.target.display}: {text}")
        return SinkUnavailable(f"{self.target.display}: unexpected {type(exc).__name__}: {text}")

    def _scrub(self, text: str) -> str:
        for secret in _secrets(self._password, self.target.password, self.settings.dsn):
            text = text.replace(secret, "***" if secret != self.settings.dsn else self.target.display)
        return text


def _secrets(*values: str) -> Iterable[str]:
    # the DSN first, so its password inside it is replaced together with it
    return sorted({v for v in values if v}, key=len, reverse=True)
