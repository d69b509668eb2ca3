"""Settings of the node agent, one frozen dataclass built once at the entry point from flags/env vars.

Each field says its unit. Validation happens on construction, so a bad value stops the agent at start
with a ``ConfigError`` naming the flag. This module must not read the environment or touch the kernel.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared.options import TOP_LEVEL, add_arguments, from_args, option, require
from kubenetmon.shared.schema import MAX_INTERVAL_SECONDS
from kubenetmon.shared.settings import HttpSettings

MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class AgentSettings:
    """What one node agent reads, how often, where it keeps state, and how it reports."""

    node_name: str = option(
        "", flag="--node-name", metavar="NAME", help="this node's name (Kubernetes: spec.nodeName)"
    )
    netns: str = option(
        "",
        flag="--netns",
        metavar="NAME",
        help="read the conntrack table of this named network namespace (default: own)",
    )
    poll_interval_s: float = option(
        5.0, flag="--poll-interval", kind="duration", help="time between two conntrack dumps"
    )
    interval_s: float = option(
        60.0,
        flag="--interval",
        kind="duration",
        help="report interval, whole seconds, aligned to wall-clock multiples of itself",
    )
    state_dir: str = option(
        "/run/kubenetmon",
        flag="--state-dir",
        metavar="DIR",
        help="directory of the checkpoint and pending reports",
    )
    metrics_port: int = option(
        9810,
        flag="--http-port",
        aliases=("--metrics-port",),
        kind="int",
        help="port of /metrics, /healthz, /readyz (-1: off)",
    )
    metrics_host: str = option(
        "0.0.0.0",
        flag="--http-host",
        metavar="HOST",
        aliases=("--metrics-host",),
        help="address of the metrics server",
    )
    young_node_s: float = option(
        600.0,
        flag="--young-node",
        kind="duration",
        help="while the node is younger than this, wait for conntrack accounting instead of refusing",
    )
    max_message_bytes: int = option(
        512 * 1024,
        flag="--max-message-bytes",
        kind="size",
        help="largest RAW message (<= server max_payload)",
    )
    max_flows: int = option(
        2_000_000,
        flag="--max-flows",
        kind="int",
        help="flows tracked at most; beyond, new flows are counted when room frees or when they close",
    )
    max_backlog_reports: int = option(
        16,
        flag="--max-backlog-reports",
        kind="int",
        help="unpublished reports kept apart; beyond, the newest are merged into one",
    )
    event_buffer_bytes: int = option(
        256 * MIB,
        flag="--event-buffer",
        kind="size",
        help="receive buffer of the DESTROY event socket",
    )
    publish_window: int = option(
        32, flag="--publish-window", kind="int", help="RAW messages awaiting their ack at once"
    )
    skip_sanity_check: bool = option(
        False,
        flag="--skip-sanity-check",
        kind="switch",
        group=TOP_LEVEL,
        help="start even if net.netfilter.nf_conntrack_acct is off (flows would have no counters)",
    )
    report_sctp: bool = option(
        False, flag="--report-sctp", kind="switch", group=TOP_LEVEL, help="report SCTP flows too"
    )
    """Report SCTP flows too (TCP and UDP always)."""
    external_interfaces: tuple[str, ...] = option(
        (),
        flag="--external-interfaces",
        kind="append",
        metavar="NAME",
        group=TOP_LEVEL,
        help="the node's external interfaces, whose byte counters the ledger compares with what conntrack "
        "metered (shell globs; repeatable, or comma-separated; default: those of the default routes)",
    )
    socket_owners: bool = option(
        False,
        flag="--socket-owners",
        kind="switch",
        group=TOP_LEVEL,
        help="name the hostNetwork pod owning each node socket (socket -> process -> cgroup -> pod UID; "
        "needs the host's /proc, by hostPID or at --proc-root, and CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)",
    )
    proc_root: str = option(
        "/proc", flag="--proc-root", metavar="DIR", help="the node's /proc (for --socket-owners)"
    )
    skip_link_stats: bool = option(
        False,
        flag="--skip-link-stats",
        kind="switch",
        group=TOP_LEVEL,
        help="do not read the interfaces' byte counters (reports then say nothing of source coverage)",
    )
    dns_names: bool = option(
        False,
        flag="--dns-names",
        kind="switch",
        group=TOP_LEVEL,
        help="watch DNS answers on the node (UDP from port 53; needs CAP_NET_RAW) and name remote addresses",
    )
    dns_grace_s: float = option(
        120.0,
        flag="--dns-grace",
        kind="duration",
        help="how long past its TTL a DNS answer still names its addresses",
    )
    dns_max_entries: int = option(
        65536,
        flag="--dns-max-entries",
        kind="int",
        help="addresses with a remembered DNS name at most; beyond, the oldest answers are forgotten",
    )

    def __post_init__(self) -> None:
        require(self, "node_name", bool(self.node_name.strip()), "a node name")
        require(self, "poll_interval_s", self.poll_interval_s > 0, "a positive duration")
        require(
            self,
            "interval_s",
            1 <= self.interval_s <= MAX_INTERVAL_SECONDS and float(self.interval_s).is_integer(),
            f"a whole number of seconds from 1 to {MAX_INTERVAL_SECONDS}",
        )
        require(self, "poll_interval_s", self.poll_interval_s <= self.interval_s, "at most --interval")
        require(self, "metrics_port", -1 <= self.metrics_port <= 65535, "a port, or -1")
        require(self, "max_message_bytes", 4096 <= self.max_message_bytes <= 64 * MIB, "4KiB to 64MiB")
        require(self, "max_flows", self.max_flows >= 1, "an integer >= 1")
        require(self, "max_backlog_reports", self.max_backlog_reports >= 2, "an integer >= 2")
        require(self, "event_buffer_bytes", self.event_buffer_bytes >= 65536, "at least 64KiB")
        require(self, "publish_window", 1 <= self.publish_window <= 1024, "1 to 1024")
        require(self, "dns_grace_s", 0 <= self.dns_grace_s <= 86400, "0 to 24h")
        require(self, "dns_max_entries", 1 <= self.dns_max_entries <= 10_000_000, "1 to 10000000")

    @property
    def interval(self) -> int:
        """The report interval in whole seconds."""
        return int(self.interval_s)

    @property
    def http(self) -> HttpSettings:
        return HttpSettings(host=self.metrics_host, port=self.metrics_port)

    @property
    def stall_after_s(self) -> float:
        """``/healthz`` fails once no poll has completed for this long."""
        return max(10 * self.poll_interval_s, 30.0)


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, AgentSettings, title="agent")


def agent_settings(args: argparse.Namespace) -> AgentSettings:
    return from_args(AgentSettings, args)
