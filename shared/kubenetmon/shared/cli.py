"""The ``kubenetmon`` command: one entry point, a subcommand per job, each loaded lazily by module name.

A registry maps each subcommand to the module that implements it. That module exposes
``configure(parser)`` (adds its flags) and ``main(args) -> int``. Nothing is imported until the
subcommand is chosen, so ``kubenetmon --help`` is instant, a role imports only what it needs, and this
package never imports a service statically.

Every ``--some-flag`` option may also come from the environment as ``KUBENETMON_SOME_FLAG``; an explicit
flag wins. Secrets (passwords, tokens) never show their value in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import redact_userinfo

ENV_PREFIX: Final = "KUBENETMON_"
NOT_BUILT_EXIT: Final = 2
_SECRET_WORDS: Final = ("password", "token", "secret", "nkey")


@dataclass(frozen=True)
class Command:
    module: str
    help: str


COMMANDS: Final[dict[str, Command]] = {
    "agent": Command("kubenetmon.agent.cli", "node agent: conntrack deltas -> RAW stream"),
    "enricher": Command("kubenetmon.enricher.cli", "RAW -> labelled ENRICHED rows (pods, zones, clouds)"),
    "metadata": Command(
        "kubenetmon.enricher.metadata", "one active watcher of the API server -> META, for the enrichers"
    ),
    "writer": Command("kubenetmon.writer.cli", "ENRICHED rows -> ClickHouse, batched and idempotent"),
    "replay": Command("kubenetmon.shared.replay", "re-enrich RAW, re-load ENRICHED, re-drive the DLQ"),
    "up": Command("kubenetmon.shared.up", "run the whole pipeline on this machine, with a live view"),
    "top": Command("kubenetmon.writer.top", "top talkers report from ClickHouse"),
    "check": Command(
        "kubenetmon.writer.check", "is a window's data whole? per node and interval, from the ledger"
    ),
    "cost": Command("kubenetmon.writer.cost", "what the metered traffic costs, at price-book list prices"),
    "sql": Command("kubenetmon.writer.sql", "run a query against the flows database"),
    "label": Command(
        "kubenetmon.enricher.label", "label RAW records (JSON lines) offline, as the enricher would"
    ),
    "nats": Command("kubenetmon.shared.natsadmin", "NATS admin: create or reconcile the JetStream topology"),
    "clickhouse": Command("kubenetmon.writer.migrate", "ClickHouse admin: create or upgrade the schema"),
    "conntrack": Command("kubenetmon.agent.dump", "read the kernel conntrack table as the agent does"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for secrets, empty values and URL passwords (defaults come from the env)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if is_secret(action.dest) or action.default in (None, "", [], False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text

    def _expand_help(self, action: argparse.Action) -> str:
        return redact_userinfo(super()._expand_help(action))


def is_secret(dest: str) -> bool:
    return any(word in dest.lower() for word in _SECRET_WORDS)


def env_name(action: argparse.Action) -> str | None:
    """``--nats-url`` -> ``KUBENETMON_NATS_URL``; positionals and help/version have none."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Let ``KUBENETMON_*`` variables supply defaults for every long option of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                apply_env_defaults(sub, environ)
            continue
        name = env_name(action)
        if name is None or name not in environ:
            continue
        raw = environ[name]
        if action.nargs == 0:  # store_true / store_false flags
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
            if isinstance(action, argparse._StoreFalseAction):
                value = not value
        elif action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction):
            value = [action.type(v) if action.type else v for v in raw.split(",") if v.strip()]  # type: ignore[operator]
        else:
            try:
                value = action.type(raw) if action.type else raw  # type: ignore[operator]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"{name}={raw!r}: {exc}")
        action.default = value
        action.required = False


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="kubenetmon",
        description="Kubernetes network-flow metering: exact bytes per workload, zone, region and cloud.",
        epilog="Every --flag can also be set as a KUBENETMON_FLAG environment variable.",
        formatter_class=HelpFormatter,
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        subs.add_parser(name, help=cmd.help, description=cmd.help, formatter_class=HelpFormatter)
    return parser, subs


def load(name: str) -> object | None:
    """Import a subcommand's module, or None if it is not built yet."""
    try:
        return importlib.import_module(COMMANDS[name].module)
    except ModuleNotFoundError as exc:
        if exc.name and COMMANDS[name].module.startswith(exc.name):
            return None
        raise


_RELATIVE: Final = re.compile(r"-\d+(\.\d+)?[a-z]*")
"""A relative time such as ``-2h`` (``--from -2h``), which argparse would take for an option."""


def attach_relative_times(argv: Sequence[str]) -> list[str]:
    """``--flag -2h`` as ``--flag=-2h``, so a relative time can follow its flag as the README shows."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" not in arg and i + 1 < len(argv) and _RELATIVE.fullmatch(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = attach_relative_times(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    if chosen in COMMANDS:
        module = load(chosen)
        if module is None:
            print(f"kubenetmon {chosen}: not built yet in this version", file=sys.stderr)
            return NOT_BUILT_EXIT
        module.configure(subs.choices[chosen])  # type: ignore[attr-defined]
    apply_env_defaults(parser, dict(os.environ))
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's parser, with its usage, not the top level's
        (subs.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return NOT_BUILT_EXIT
    try:
        return int(module.main(args) or 0)  # type: ignore[attr-defined]
    except ConfigError as exc:
        print(f"kubenetmon {args.command}: {exc}", file=sys.stderr)
        return NOT_BUILT_EXIT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
