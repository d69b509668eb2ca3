"""``kubenetmon nats``: create or reconcile the JetStream topology, and show its state.

    kubenetmon nats init --nats-url nats://nats:4222     # streams + durable consumers, idempotent
    kubenetmon nats status --nats-url nats://nats:4222   # messages, bytes and consumer lag

``init`` prints one line per stream, consumer and key-value bucket (the ``metadata`` role's lease):
created, updated with the changed fields, unchanged, or conflict with the reason; and exits 1 on any
conflict, so a deploy job fails loudly on a drift it cannot fix. The services run the
same reconciliation at start; this command lets an operator (or a Kubernetes Job) do it ahead of
them. This module must only drive the broker, never reimplement it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import exits, logs, runtime, topology
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.options import add_arguments, from_args, option, parse_duration
from kubenetmon.shared.settings import LogSettings, NatsSettings, add_log_arguments, add_nats_arguments

EXIT_CONFLICT: Final = exits.FAILED
EXIT_UNREACHABLE: Final = exits.FAILED


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
    defaults = {"format": "text", "level": "warning"}
    log_settings = from_args(
        LogSettings, args, **{k: v for k, v in defaults.items() if not getattr(args, f"log_{k}")}
    )
    logs.setup(log_settings)
    try:
        wait_s = parse_duration(args.connect_wait)
    except ValueError as exc:
        raise ConfigError(f"--connect-wait: expected {exc}, got {args.connect_wait!r}") from None
    work = _init if args.verb == "init" else _status

    async def run(stop: asyncio.Event) -> int:
        try:
            async with await Broker.connect(
                settings, name=f"kubenetmon-nats-{args.verb}", wait_s=wait_s
            ) as broker:
                return await work(broker)
        except TransientError as exc:
            print(f"kubenetmon nats {args.verb}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE

    return runtime.run(run, drain_timeout_s=wait_s + 5)


async def _init(broker: Broker) -> int:
    streams = await broker.ensure_topology()
    # the metadata role's lease: it creates a missing bucket itself, but only init reconciles one
    buckets = [await broker.ensure_bucket(bucket) for bucket in topology.BUCKETS]
    report = topology.TopologyReport((*streams.changes, *buckets))
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
        print(
            f"stream {stats.name}: {stats.messages} messages, {stats.bytes} bytes, "
            f"seq {stats.first_seq}..{stats.last_seq}{placement}"
        )
    for consumer in topology.CONSUMERS:
        c = await broker.consumer_info(consumer)
        print(
            f"consumer {c.stream}/{c.name}: {c.num_pending} pending, {c.num_ack_pending} in flight, "
            f"{c.num_redelivered} redelivered, acked up to {c.ack_floor_stream_seq}"
        )
    return exits.DONE
