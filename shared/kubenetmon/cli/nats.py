"""``kubenetmon nats``: create or reconcile the JetStream topology, and show its state.

    kubenetmon nats init --nats-url nats://nats:4222     # streams + durable consumers, idempotent
    kubenetmon nats status --nats-url nats://nats:4222   # messages, bytes and consumer lag

Once connected, both ask again while JetStream cannot answer yet (``--settle-wait``): a deploy Job
started with its cluster meets no JetStream leader for the first seconds. ``init`` prints one line per
stream, consumer and key-value bucket (the ``metadata`` role's lease): created, updated with the changed
fields, unchanged, or conflict with the reason; and exits 1 on any conflict, so a deploy job fails loudly
on a drift it cannot fix. The services run the same reconciliation at start; this command lets an
operator (or a Kubernetes Job) do it ahead of them. This module must only drive the broker, never
reimplement it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff, exits, logs, runtime, topology
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.options import add_arguments, from_args, option, parse_duration
from kubenetmon.shared.settings import LogSettings, NatsSettings, add_log_arguments, add_nats_arguments

EXIT_CONFLICT: Final = exits.FAILED
EXIT_UNREACHABLE: Final = exits.FAILED
_FIRST_RETRY_S: Final = 0.5
_LAST_RETRY_S: Final = 5.0
_SAY_EVERY: Final = 5
"""While JetStream settles: the first failure is printed, then every fifth."""


@dataclass(frozen=True)
class AdminFlags:
    """The flags of the ``nats`` verbs besides the NATS and logging ones (as typed)."""

    connect_wait: str = option(
        "10s",
        flag="--connect-wait",
        native=True,
        metavar="DURATION",
        help="give up if no NATS server answers within this time",
    )
    settle_wait: str = option(
        "60s",
        flag="--settle-wait",
        native=True,
        metavar="DURATION",
        help="once connected, ask again while JetStream cannot answer yet (a cluster still electing its "
        "leader or placing replicas), for up to this long",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, text in (
        ("init", "create or reconcile the streams, durable consumers and key-value bucket (idempotent)"),
        ("status", "show stream sizes and consumer lag"),
    ):
        sub = verbs.add_parser(verb, help=text, description=text, formatter_class=parser.formatter_class)
        add_nats_arguments(sub)
        add_log_arguments(sub)
        add_arguments(sub, AdminFlags, title=None)
    parser.set_defaults(nats_parser=parser)


def main(args: argparse.Namespace) -> int:
    if args.verb is None:
        args.nats_parser.print_help()
        return exits.USAGE
    settings = from_args(NatsSettings, args)
    # The printed lines are the report; logs are for problems unless asked otherwise.
    defaults = {"level": "warning"}
    log_settings = from_args(
        LogSettings, args, **{k: v for k, v in defaults.items() if not getattr(args, f"log_{k}")}
    )
    logs.setup(log_settings)
    wait_s = _duration(args.connect_wait, "--connect-wait")
    settle_s = _duration(args.settle_wait, "--settle-wait")
    work = _Init() if args.verb == "init" else _status
    command = f"kubenetmon nats {args.verb}"

    async def run(stop: asyncio.Event) -> int:
        try:
            async with await Broker.connect(
                settings, name=f"kubenetmon-nats-{args.verb}", wait_s=wait_s
            ) as broker:
                return await _settling(lambda: work(broker), stop=stop, within_s=settle_s, command=command)
        except TransientError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE

    return runtime.run(run, drain_timeout_s=wait_s + 5)


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: expected {exc}, got {text!r}") from None


async def _settling(
    work: Callable[[], Awaitable[int]], *, stop: asyncio.Event, within_s: float, command: str
) -> int:
    """``work()``, asked again while it raises ``TransientError`` for up to ``within_s`` (then that error
    is raised): an init Job started with its cluster finds no JetStream leader for the first seconds.
    Every verb is safe to repeat: ``init`` reconciles, ``status`` reads."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    failures = 0
    while True:
        try:
            return await work()
        except TransientError as exc:
            failures += 1
            left = deadline - loop.time()
            if left <= 0 or stop.is_set():
                raise
            if backoff.now_and_then(failures, every=_SAY_EVERY):
                print(f"{command}: JetStream not ready, asking again: {exc}", file=sys.stderr)
            delay = backoff.exponential(failures - 1, base_s=_FIRST_RETRY_S, max_s=_LAST_RETRY_S)
            if await runtime.sleep_or_stop(stop, min(delay, left)):
                raise


class _Init:
    """``nats init``, asked again while JetStream settles: what an earlier attempt created or updated
    is reported as such, not as "unchanged" by the attempt that finished the work."""

    def __init__(self) -> None:
        self.earlier: dict[tuple[str, str], topology.Change] = {}

    def _merged(self, changes: tuple[topology.Change, ...]) -> tuple[topology.Change, ...]:
        merged = []
        for change in changes:
            before = self.earlier.get((change.kind, change.name))
            done = before if before is not None and change.action == "unchanged" else change
            self.earlier[(change.kind, change.name)] = done
            merged.append(done)
        return tuple(merged)

    async def __call__(self, broker: Broker) -> int:
        streams = self._merged((await broker.ensure_topology()).changes)
        # the metadata role's lease: it creates a missing bucket itself, but only init reconciles one
        buckets = self._merged(tuple([await broker.ensure_bucket(bucket) for bucket in topology.BUCKETS]))
        report = topology.TopologyReport((*streams, *buckets))
        for line in report.lines():
            print(line)
        counts: dict[str, int] = {}
        for change in report.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        print("topology: " + ", ".join(f"{n} {action}" for action, n in counts.items()))
        return EXIT_CONFLICT if report.conflicts else exits.DONE


async def _status(broker: Broker) -> int:
    for kind in topology.KINDS:
        stats = await broker.stream_info(kind)
        placement = f", {stats.replicas} replicas led by {stats.leader}" if stats.leader else ""
        limit = f" of {stats.max_bytes} ({stats.bytes / stats.max_bytes:.0%})" if stats.max_bytes > 0 else ""
        print(
            f"stream {stats.name}: {stats.messages} messages, {stats.bytes} bytes{limit}, "
            f"seq {stats.first_seq}..{stats.last_seq}{placement}"
        )
    for consumer in topology.CONSUMERS:
        c = await broker.consumer_info(consumer)
        print(
            f"consumer {c.stream}/{c.name}: {c.num_pending} pending, {c.num_ack_pending} in flight, "
            f"{c.num_redelivered} redelivered, acked up to {c.ack_floor_stream_seq}"
        )
    return exits.DONE
