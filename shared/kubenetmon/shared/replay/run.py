"""The parts of a replay run every verb shares: the run id, logging, connecting, exit codes.

A replay never creates or reconciles the topology (see ``connect``). Exit codes: 0 done, 1 failures or
unreachable, 130 interrupted (rerun to finish), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import exits, logs
from kubenetmon.shared.broker import Broker, connect_ready
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import add_arguments, from_args, option
from kubenetmon.shared.settings import LogSettings, NatsSettings

_RUN_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONNECT_WAIT_S: Final = 10.0


@dataclass(frozen=True)
class RunFlags:
    """What every verb offers besides its window and selection."""

    dry_run: bool = option(
        False,
        flag="--dry-run",
        kind="switch",
        help="only count what would be replayed (messages, records, bytes); change nothing",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dry-run`` (every verb), among the verb's own options."""
    add_arguments(parser, RunFlags, title=None)


def run_id(text: str | None) -> str:
    """The given run id (validated), or a new random one."""
    if not text:
        return secrets.token_hex(4)
    if not _RUN_ID.match(text):
        raise ConfigError(f"--run-id: expected 1 to 64 letters, digits, - or _, got {text!r}")
    return text


def setup_logging(args: argparse.Namespace, *, process: str) -> bool:
    """Configure logging (plain text on a terminal unless told otherwise); True if stderr is a TTY."""
    logs.setup(from_args(LogSettings, args), process=process)
    return sys.stderr.isatty()


async def connect(settings: NatsSettings, *, name: str, streams: Sequence[str]) -> Broker:
    """Connect and check that ``streams`` (kinds) exist, or ``TransientError`` within a few seconds.

    A replay never creates or reconciles the topology: its flags may not carry the deployment's
    retention settings, and reconciling with the defaults would shorten the very history it reads.
    """
    return await connect_ready(settings, name=name, wait_s=_CONNECT_WAIT_S, ensure=False, streams=streams)


def guarded(
    verb: str, job: Callable[[asyncio.Event], Awaitable[int]]
) -> Callable[[asyncio.Event], Awaitable[int]]:
    """``job`` with a ``ConfigError`` reported as one line on stderr and exit code 2, as the CLI does."""

    async def run(stop: asyncio.Event) -> int:
        try:
            return await job(stop)
        except ConfigError as exc:
            print(f"kubenetmon replay {verb}: {exc}", file=sys.stderr)
            return exits.USAGE

    return run


def exit_code(*, interrupted: bool, failed: int) -> int:
    if interrupted:
        return exits.INTERRUPTED
    return exits.FAILED if failed else exits.DONE
