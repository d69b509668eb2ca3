"""Where the stored data is: one rule for every command that reads or writes it.

``--data-dir DIR`` is shorthand for ``--clickhouse-dsn chdb://DIR/clickhouse``, the layout ``kubenetmon
up`` uses; with neither flag, ``up``'s default data directory (``~/.local/share/kubenetmon``, or
``$XDG_DATA_HOME/kubenetmon``). A data directory without a ``clickhouse`` directory, or (for a reader) a
chDB directory without the database, is one friendly line: opening it would create an empty database
there and answer "no rows". Readers (``sql``, ``top``, ``check``, ``cost``) do not list the writer-only
ClickHouse flags (``--ttl-days``, ``--clickhouse-cluster``), though they accept them.

Pure checks of the file system; this module opens no connection.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import add_arguments, from_args, option
from kubenetmon.shared.settings import default_data_dir
from kubenetmon.writer.dsn import parse_dsn
from kubenetmon.writer.settings import ClickHouseSettings
from kubenetmon.writer.sink import DEFAULT_DATABASE

WRITER_ONLY: Final = frozenset({"ttl_days", "cluster"})
"""ClickHouse settings only a writer or ``migrate`` uses: readers accept them but do not list them."""


def data_dir_dsn(data_dir: str) -> str:
    """The DSN of the chDB directory inside a ``kubenetmon up`` data directory."""
    return "chdb://" + os.path.join(os.path.abspath(data_dir), "clickhouse")


@dataclass(frozen=True)
class TargetFlags:
    """Where a read command looks, besides the ClickHouse flags."""

    data_dir: str | None = option(
        None,
        flag="--data-dir",
        native=True,
        metavar="DIR",
        help="local data directory: same as --clickhouse-dsn chdb://DIR/clickhouse"
        " (default, with neither: ~/.local/share/kubenetmon, or $XDG_DATA_HOME/kubenetmon)",
    )


def add_target_arguments(parser: argparse.ArgumentParser, *, writes: bool = False) -> None:
    """``--data-dir`` or ``--clickhouse-dsn``, and the ClickHouse flags (a reader's, unless ``writes``)."""
    add_arguments(parser, TargetFlags, title="where the data is")
    add_arguments(parser, ClickHouseSettings, title="ClickHouse", hidden=() if writes else WRITER_ONLY)


def target_settings(
    args: argparse.Namespace, *, waits: bool = False, creates: bool = False
) -> ClickHouseSettings:
    """The one data-location rule: ``--clickhouse-dsn``, else ``--data-dir``, else ``up``'s default.

    ``waits``: the caller waits for the data to appear (``top --owner-only``), so none there is no error.
    ``creates``: the caller creates the schema (``migrate``, ``replay enriched``) in a DSN's directory.
    """
    data_dir = getattr(args, "data_dir", None)
    if data_dir and args.clickhouse_dsn:
        raise ConfigError("give either --clickhouse-dsn or --data-dir, not both")
    if not data_dir and not args.clickhouse_dsn:
        data_dir = default_data_dir(os.environ)
    if data_dir and not waits and not os.path.isdir(os.path.join(data_dir, "" if creates else "clickhouse")):
        # Opening a missing directory would create an empty database there and answer "no rows".
        raise ConfigError(f"--data-dir {data_dir}: no kubenetmon data there (run `kubenetmon up` first)")
    overrides = {"dsn": data_dir_dsn(data_dir)} if data_dir else {}
    settings = from_args(ClickHouseSettings, args, **overrides).with_secret().check_files()
    if not waits:
        require_database(settings, creates=creates)
    return settings


def require_database(settings: ClickHouseSettings, *, creates: bool = False) -> None:
    """A chDB directory must hold the database before a reader opens it (opening would create one); a
    data directory of ``up`` given as a chDB directory is refused even to a command that creates one."""
    target = parse_dsn(settings.dsn)
    if target.kind != "chdb":
        return
    database = settings.database or target.database or DEFAULT_DATABASE
    if os.path.isdir(os.path.join(target.path, "metadata", database)):
        return
    if os.path.isdir(os.path.join(target.path, "clickhouse")):
        raise ConfigError(
            f"{settings.dsn}: a kubenetmon data directory, not its database: use --data-dir {target.path}"
        )
    if not creates:
        raise ConfigError(f"{settings.dsn}: no database {database} there")


_MISSING: Final = re.compile(r"\((UNKNOWN_TABLE|UNKNOWN_DATABASE)\)")
_NAMED: Final = re.compile(r"(?:Table|table|identifier|Database)\s+[`']?([\w.]+)[`']?")


def explain(error: Exception) -> str:
    """An error for a person: a missing table, view or database says how to recreate it (the rest as is)."""
    text = str(error)
    if not _MISSING.search(text):
        return text
    named = _NAMED.search(text)
    what = f" ({named.group(1)})" if named else ""
    return (
        f"a table or view of the schema is missing{what}: run `kubenetmon clickhouse migrate` with the same"
        " --data-dir or --clickhouse-dsn to create it again"
    )
