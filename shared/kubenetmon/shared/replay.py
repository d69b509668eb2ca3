"""``kubenetmon replay``: turn the streams' history into corrections.

    kubenetmon replay raw --from -2h --to -1h --inventory cluster.yaml   # re-enrich RAW, rows replaced
    kubenetmon replay raw --from 2026-11-26T04:00:00Z --metadata as-of  # with the metadata of the time
    kubenetmon replay enriched --from -2d --clickhouse-dsn ...          # reload ClickHouse
    kubenetmon replay dlq --reason max_deliver --dry-run                # what a re-drive would send

Each verb lives where its work is: ``raw`` in the enricher (it labels), ``enriched`` in the writer (it
inserts), ``dlq`` here (it only moves messages). This package must not import a service, so the verbs
are modules named in ``VERBS`` and imported only when chosen: the verb's parser is configured (flags,
and their ``KUBENETMON_*`` variables) at the moment argparse meets the verb on the command line.

Shared by the verbs: the run id, connecting to NATS, logging set-up, the TTY decision for the progress
bar, and the exit codes (0 done, 1 failures or unreachable, 130 interrupted: rerun to finish).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubenetmon.shared import cli, logs
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import from_args
from kubenetmon.shared.settings import LogSettings, NatsSettings

log = logging.getLogger(__name__)

EXIT_DONE: Final = 0
EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130
_RUN_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONNECT_WAIT_S: Final = 10.0
_RELATIVE_TIME: Final = re.compile(r"^-[0-9]+(\.[0-9]+)?[a-zA-Z]*$")


@dataclass(frozen=True)
class Verb:
    module: str
    help: str


VERBS: Final[dict[str, Verb]] = {
    "raw": Verb(
        "kubenetmon.enricher.replay",
        "re-enrich the RAW records of a time window and republish them (the writer replaces the rows)",
    ),
    "enriched": Verb(
        "kubenetmon.writer.replay",
        "re-insert the ENRICHED rows of a time window into ClickHouse (idempotent)",
    ),
    "dlq": Verb(
        "kubenetmon.shared.replay_dlq",
        "re-drive dead-lettered messages to their original subject, then remove them from the DLQ",
    ),
}


class _LazyVerbs(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Configures a verb's parser (importing its module) only when the command line names it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list) and values
        sub = self._name_parser_map.get(values[0])
        if sub is not None:
            _configure_verb(values[0], sub)
            cli.apply_env_defaults(sub, dict(os.environ))  # the CLI edge: flags may come from the env
        super().__call__(parser, namespace, values, option_string)


def _configure_verb(name: str, sub: argparse.ArgumentParser) -> None:
    if sub.get_default("replay_module"):
        return
    module = importlib.import_module(VERBS[name].module)
    module.configure(sub)
    sub.set_defaults(replay_module=VERBS[name].module)
    # `--from -2h`: let a relative time pass as a value, as argparse does for negative numbers
    sub._negative_number_matcher = _RELATIVE_TIME


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="replay_verb", metavar="VERB", action=_LazyVerbs)
    for name, verb in VERBS.items():
        verbs.add_parser(name, help=verb.help, description=verb.help, formatter_class=parser.formatter_class)
    parser.set_defaults(replay_parser=parser)


def configure_all(parser: argparse.ArgumentParser) -> None:
    """``configure`` with every verb configured at once (for the generated configuration reference)."""
    configure(parser)
    for action in parser._actions:
        if isinstance(action, _LazyVerbs):
            for name, sub in action.choices.items():
                _configure_verb(name, sub)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "replay_verb", None) is None:
        args.replay_parser.print_help()
        return 2
    module = importlib.import_module(args.replay_module)
    return int(module.main(args))


# ------------------------------------------------------------------------------------ for the verbs


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` (every verb)."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=False,
        help="only count what would be replayed (messages, records, bytes); change nothing",
    )


def run_id(text: str | None) -> str:
    """The given run id (validated), or a new random one."""
    if not text:
        return secrets.token_hex(4)
    if not _RUN_ID.match(text):
        raise ConfigError(f"--run-id: expected 1 to 64 letters, digits, - or _, got {text!r}")
    return text


def setup_logging(args: argparse.Namespace, *, process: str) -> bool:
    """Configure logging (plain text on a terminal unless told otherwise); True if stderr is a TTY."""
    tty = sys.stderr.isatty()
    overrides = {} if getattr(args, "log_format", None) else {"format": "text" if tty else "json"}
    logs.setup(from_args(LogSettings, args, **overrides), process=process)
    return tty


async def connect(settings: NatsSettings, *, name: str, streams: Sequence[str]) -> Broker:
    """Connect and check that ``streams`` (kinds) exist, or ``TransientError`` within a few seconds.

    A replay never creates or reconciles the topology: its flags may not carry the deployment's
    retention settings, and reconciling with the defaults would shorten the very history it reads.
    """
    broker = await Broker.connect(settings, name=name, wait_s=_CONNECT_WAIT_S)
    try:
        for kind in streams:
            await broker.stream_info(kind)
    except BaseException:
        await broker.close()
        raise
    return broker


def guarded(
    verb: str, job: Callable[[asyncio.Event], Awaitable[int]]
) -> Callable[[asyncio.Event], Awaitable[int]]:
    """``job`` with a ``ConfigError`` reported as one line on stderr and exit code 2, as the CLI does."""

    async def run(stop: asyncio.Event) -> int:
        try:
            return await job(stop)
        except ConfigError as exc:
            print(f"kubenetmon replay {verb}: {exc}", file=sys.stderr)
            return cli.NOT_BUILT_EXIT

    return run


def exit_code(*, interrupted: bool, failed: int) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_DONE
