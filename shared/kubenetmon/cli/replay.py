"""``kubenetmon replay``: turn the streams' history into corrections.

    kubenetmon replay raw --from -2h --to -1h --inventory cluster.yaml   # re-enrich RAW, rows replaced
    kubenetmon replay raw --from 2026-11-26T04:00:00Z --metadata as-of  # with the metadata of the time
    kubenetmon replay enriched --from -2d --clickhouse-dsn ...          # reload ClickHouse
    kubenetmon replay dlq --reason max_deliver --dry-run                # what a re-drive would send

Each verb lives where its work is: ``raw`` in the enricher (it labels), ``enriched`` in the writer (it
inserts), ``dlq`` beside this registry (it only moves messages). A verb's module is imported only when
the command line names it (inside a loader function, where the import contracts still see the edge): its
parser is configured (flags, and their ``KUBENETMON_*`` variables) at the moment argparse meets the verb.
What the verbs share (run id, connecting, logging, exit codes) is ``kubenetmon.shared.replay.run``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from kubenetmon.cli.flags import apply_env_defaults
from kubenetmon.shared import exits

_RELATIVE_TIME: Final = re.compile(r"^-[0-9]+(\.[0-9]+)?[a-zA-Z]*$")


def _raw() -> ModuleType:
    from kubenetmon.enricher import replay

    return replay


def _enriched() -> ModuleType:
    from kubenetmon.writer import replay

    return replay


def _dlq() -> ModuleType:
    from kubenetmon.cli import replay_dlq

    return replay_dlq


@dataclass(frozen=True)
class Verb:
    load: Callable[[], ModuleType]
    help: str


VERBS: Final[dict[str, Verb]] = {
    "raw": Verb(
        _raw,
        "re-enrich the RAW records of a time window and republish them (the writer replaces the rows)",
    ),
    "enriched": Verb(
        _enriched,
        "re-insert the ENRICHED rows of a time window into ClickHouse (idempotent)",
    ),
    "dlq": Verb(
        _dlq,
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
            apply_env_defaults(sub, dict(os.environ))  # the CLI edge: flags may come from the env
        super().__call__(parser, namespace, values, option_string)


def _configure_verb(name: str, sub: argparse.ArgumentParser) -> None:
    if sub.get_default("replay_module"):
        return
    module = VERBS[name].load()
    module.configure(sub)
    sub.set_defaults(replay_module=module)
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
        return exits.USAGE
    return int(args.replay_module.main(args))
