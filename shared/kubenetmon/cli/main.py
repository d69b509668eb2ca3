"""The ``kubenetmon`` command: one entry point, a subcommand per job, each loaded only when chosen.

This is the top floor: commands may import the roles (agent, enricher, writer) and ``kubenetmon.shared``;
nothing below imports a command. A registry maps each subcommand to a loader that imports the module
implementing it (inside the function, so ``kubenetmon --help`` is instant, a role imports only what it
needs, and the import contracts still see every edge). That module exposes ``configure(parser)`` (adds
its flags) and ``main(args) -> int``.

Every ``--some-flag`` option may also come from the environment as ``KUBENETMON_SOME_FLAG``; an explicit
flag wins. Secrets (passwords, tokens) never show their value in ``--help`` (``kubenetmon.cli.flags``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final

from kubenetmon.cli.flags import (
    ENV_PREFIX,
    HelpFormatter,
    apply_env_defaults,
    attach_relative_times,
    env_name,
    is_secret,
)
from kubenetmon.shared import exits
from kubenetmon.shared.errors import ConfigError

__all__ = [
    "COMMANDS",
    "ENV_PREFIX",
    "HelpFormatter",
    "apply_env_defaults",
    "attach_relative_times",
    "build_parser",
    "env_name",
    "is_secret",
    "load",
    "main",
]


def _agent() -> ModuleType:
    from kubenetmon.agent import cli

    return cli


def _enricher() -> ModuleType:
    from kubenetmon.enricher import cli

    return cli


def _metadata() -> ModuleType:
    from kubenetmon.enricher import metadata

    return metadata


def _auth() -> ModuleType:
    from kubenetmon.enricher import auth

    return auth


def _writer() -> ModuleType:
    from kubenetmon.writer import cli

    return cli


def _replay() -> ModuleType:
    from kubenetmon.cli import replay

    return replay


def _up() -> ModuleType:
    from kubenetmon.cli import up

    return up


def _top() -> ModuleType:
    from kubenetmon.writer.query import top

    return top


def _check() -> ModuleType:
    from kubenetmon.writer.query import check

    return check


def _cost() -> ModuleType:
    from kubenetmon.writer.query import cost

    return cost


def _sql() -> ModuleType:
    from kubenetmon.writer.query import sql

    return sql


def _label() -> ModuleType:
    from kubenetmon.enricher import label_tool

    return label_tool


def _nats() -> ModuleType:
    from kubenetmon.cli import nats

    return nats


def _clickhouse() -> ModuleType:
    from kubenetmon.writer import migrate

    return migrate


def _conntrack() -> ModuleType:
    from kubenetmon.agent import dump

    return dump


@dataclass(frozen=True)
class Command:
    load: Callable[[], ModuleType]
    help: str


COMMANDS: Final[dict[str, Command]] = {
    "agent": Command(_agent, "node agent: conntrack deltas -> RAW stream"),
    "enricher": Command(_enricher, "RAW -> labelled ENRICHED rows (pods, zones, clouds)"),
    "metadata": Command(_metadata, "one active watcher of the API server -> META, for the enrichers"),
    "auth": Command(_auth, "NATS auth callout: one user per node for the agents (Kubernetes TokenReview)"),
    "writer": Command(_writer, "ENRICHED rows -> ClickHouse, batched and idempotent"),
    "replay": Command(_replay, "re-enrich RAW, re-load ENRICHED, re-drive the DLQ"),
    "up": Command(_up, "run the whole pipeline on this machine, with a live view"),
    "top": Command(_top, "top talkers report from ClickHouse"),
    "check": Command(_check, "is a window's data whole? per node and interval, from the ledger"),
    "cost": Command(_cost, "what the metered traffic costs, at price-book list prices"),
    "sql": Command(_sql, "run a query against the flows database"),
    "label": Command(_label, "label RAW records (JSON lines) offline, as the enricher would"),
    "nats": Command(_nats, "NATS admin: create or reconcile the JetStream topology"),
    "clickhouse": Command(_clickhouse, "ClickHouse admin: create or upgrade the schema"),
    "conntrack": Command(_conntrack, "read the kernel conntrack table as the agent does"),
}


def _version() -> str:
    try:
        return importlib.metadata.version("kubenetmon")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="kubenetmon",
        description="Kubernetes network-flow metering: exact bytes per workload, zone, region and cloud.",
        epilog="Every --flag can also be set as a KUBENETMON_FLAG environment variable.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubenetmon {_version()}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        subs.add_parser(name, help=cmd.help, description=cmd.help, formatter_class=HelpFormatter)
    return parser, subs


def load(name: str) -> ModuleType:
    """Import a subcommand's module."""
    return COMMANDS[name].load()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except BrokenPipeError:  # the reader went away (`| head`): no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exits.OUTPUT_CLOSED


def run(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command."""
    argv = attach_relative_times(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    if chosen in COMMANDS:
        module = load(chosen)
        module.configure(subs.choices[chosen])
    apply_env_defaults(parser, dict(os.environ))
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's parser, with its usage, not the top level's
        (subs.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None or module is None:
        parser.print_help()
        return exits.USAGE
    try:
        return int(module.main(args) or 0)
    except ConfigError as exc:
        print(f"kubenetmon {args.command}: {exc}", file=sys.stderr)
        return exits.USAGE
    except KeyboardInterrupt:
        return exits.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
