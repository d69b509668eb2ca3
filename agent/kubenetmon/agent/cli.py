"""``kubenetmon agent``: wire settings to parts and run the node agent until SIGTERM.

Order matters: the sanity check first (refuse a table without counters), then the conntrack sockets, so
the DESTROY subscription exists before the first dump, then the event loop. This module only wires; the
work is in ``service`` (polls, reports, checkpoints) and its ``backlog`` (publishing).
"""

from __future__ import annotations

import argparse
import logging

from kubenetmon.agent.checkpoint import StateDir, boot_id
from kubenetmon.agent.conntrack import open_conntrack, read_sysctl, write_sysctl
from kubenetmon.agent.dnscache import DnsCache
from kubenetmon.agent.dnswatch import DnsWatch
from kubenetmon.agent.links import Links
from kubenetmon.agent.owners import Sockets
from kubenetmon.agent.publisher import Publisher
from kubenetmon.agent.sanity import check, warn_if_skipped_and_off
from kubenetmon.agent.service import Agent
from kubenetmon.agent.settings import add_agent_arguments, agent_settings
from kubenetmon.shared import logs, runtime
from kubenetmon.shared.broker import preflight
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import (
    add_log_arguments,
    add_nats_arguments,
    add_runtime_arguments,
    log_settings,
    nats_settings,
    runtime_settings,
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_agent_arguments(parser)
    add_nats_arguments(parser)
    add_runtime_arguments(parser)
    add_log_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = agent_settings(args)
    nats = nats_settings(args)
    drain = runtime_settings(args).drain_timeout_s
    preflight(nats)
    logs.setup(log_settings(args), process=f"agent-{settings.node_name}")

    def read(path: str) -> str:
        return read_sysctl(path, netns=settings.netns or None)

    try:
        if settings.skip_sanity_check:
            warn_if_skipped_and_off(read, netns=settings.netns)
        else:
            check(
                read,
                netns=settings.netns,
                young_node_s=settings.young_node_s,
                write=lambda path, value: write_sysctl(path, value, netns=settings.netns or None),
            )
    except FileNotFoundError:  # entering a namespace that is not there
        raise ConfigError(f"--netns: network namespace {settings.netns!r} does not exist") from None
    except PermissionError as exc:  # entering a namespace needs CAP_SYS_ADMIN
        raise ConfigError(
            f"--netns {settings.netns}: cannot enter the network namespace ({exc.strerror or exc}):"
            " run as root, or with CAP_SYS_ADMIN and NET_ADMIN"
        ) from None
    conntrack = open_conntrack(settings.netns, event_buffer=settings.event_buffer_bytes)
    log.info(
        "agent starting",
        extra={
            "node": settings.node_name,
            "netns": settings.netns or "(own)",
            "event_buffer": conntrack.event_buffer,
        },
    )
    try:
        state_dir = StateDir(settings.state_dir)
    except OSError as exc:
        conntrack.close()
        raise ConfigError(f"--state-dir {settings.state_dir}: cannot use it ({exc})") from None
    links = None if settings.skip_link_stats else Links(netns=settings.netns or None)
    sockets = (
        Sockets(netns=settings.netns or None, proc_root=settings.proc_root)
        if settings.socket_owners
        else None
    )
    dns = None
    if settings.dns_names:
        try:
            cache = DnsCache(grace_s=settings.dns_grace_s, max_entries=settings.dns_max_entries)
            dns = DnsWatch(cache, netns=settings.netns or None)
        except OSError as exc:
            conntrack.close()
            raise ConfigError(f"--dns-names: cannot open the DNS watch socket ({exc})") from None
    agent = Agent(
        settings,
        conntrack=conntrack,
        state_dir=state_dir,
        publisher=Publisher(nats, node=settings.node_name, window=settings.publish_window),
        boot=boot_id(),
        drain_s=max(drain - 5.0, drain * 0.5),
        links=links,
        sockets=sockets,
        dns=dns,
    )
    try:
        return runtime.run(agent.main, drain_timeout_s=drain)
    finally:
        conntrack.close()
        if links is not None:
            links.close()
        if sockets is not None:
            sockets.close()
        if dns is not None:
            dns.close()
