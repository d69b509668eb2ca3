"""Settings of ``kubenetmon up``, and the layout of its data directory.

The data directory holds everything one local run keeps, so that ``kubenetmon top --data-dir DIR`` and
``kubenetmon sql --data-dir DIR`` find it, during the run (through the writer) and after::

    DIR/clickhouse/     the embedded ClickHouse (chDB) database: the flows table lives here
    DIR/nats/           the JetStream store (RAW and ENRICHED streams survive a restart)
    DIR/agent/<node>/   each agent's checkpoint and pending reports
    DIR/logs/           one log per process (JSON lines)
    DIR/inventory.json  the metadata the enricher used, when ``up`` generated it
    DIR/up.json         the run's NATS URL and labelling flags, for replays (``shared.localrun``)
    DIR/up.lock         held while a run owns the directory

Default: ``$XDG_DATA_HOME/kubenetmon``, else ``~/.local/share/kubenetmon`` (one place per user, whatever
the current directory; ``top`` and ``sql`` use it too when given no target). Only the entry point reads
the environment to compute it. This module must not start anything.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubenetmon.shared.options import TOP_LEVEL, add_arguments, from_args, option, require
from kubenetmon.shared.settings import default_data_dir


@dataclass(frozen=True)
class UpSettings:
    """One local run: where data goes, what is metered, how metadata is found, how often it reports."""

    data_dir: str = option(
        "", flag="--data-dir", metavar="DIR", help="data directory (default: ~/.local/share/kubenetmon)"
    )
    node_name: str = option(
        "", flag="--node-name", metavar="NAME", help="this machine's node name (default: the hostname)"
    )
    interval_s: float = option(
        10.0,
        flag="--interval",
        kind="duration",
        help="report interval, whole seconds (the rows' granularity)",
    )
    inventory: str = option(
        "",
        flag="--inventory",
        metavar="FILE",
        help="static Kubernetes List (YAML/JSON) of pods, nodes and services",
    )
    kubeconfig: str = option(
        "", flag="--kubeconfig", metavar="FILE", help="watch the cluster of this kubeconfig instead"
    )
    netns: str = option(
        "",
        flag="--netns",
        metavar="NAME",
        help="meter this named network namespace instead of this machine's own",
    )
    nats_port: int = option(0, flag="--nats-port", kind="int", help="loopback port of NATS (0: a free one)")
    since_s: float = option(600.0, flag="--since", kind="duration", help="window of the live table")
    by: str = option(
        "app",
        flag="--by",
        choices=("app", "pod", "namespace", "class", "zone", "service"),
        help="rows of the live table (as `kubenetmon top --by`)",
    )
    refresh_s: float = option(
        0.0,
        flag="--refresh",
        kind="duration",
        help="live table refresh (0: 2s on a terminal, else --interval)",
    )
    cloud: str = option(
        "other", flag="--cloud", choices=("aws", "gcp", "azure", "other"), help="local cloud, for classes"
    )
    region: str = option("", flag="--region", metavar="NAME", help="local region, for classes")
    ranges: tuple[str, ...] = option(
        (),
        flag="--ranges",
        metavar="FILE|URL",
        kind="list",
        help="cloud range files or URLs for the enricher, comma-separated",
    )
    keep_nats: bool = option(
        False,
        flag="--keep-nats",
        kind="switch",
        help="leave NATS running on stop, with RAW and ENRICHED, for `kubenetmon replay ... --data-dir DIR`",
    )
    demo: bool = option(
        False,
        flag="--demo",
        kind="switch",
        group=TOP_LEVEL,
        help="build a lab of network namespaces (pods on two nodes in two zones) with steady traffic, "
        "meter it, and remove it on exit",
    )
    """Meter a lab of network namespaces with generated traffic instead of this machine."""

    def __post_init__(self) -> None:
        require(self, "data_dir", bool(self.data_dir), "a directory")
        require(self, "node_name", bool(self.node_name.strip()), "a node name")
        require(
            self,
            "interval_s",
            self.interval_s >= 1 and float(self.interval_s).is_integer(),
            "a whole number of seconds >= 1",
        )
        require(self, "inventory", not (self.inventory and self.kubeconfig), "--inventory or --kubeconfig")
        require(self, "netns", not (self.demo and self.netns), "no --netns with --demo (it makes its own)")
        require(
            self,
            "inventory",
            not (self.demo and (self.inventory or self.kubeconfig)),
            "no --inventory or --kubeconfig with --demo (it describes its own lab)",
        )
        require(self, "nats_port", 0 <= self.nats_port <= 65535, "a port, or 0")
        require(self, "since_s", self.since_s > 0, "a positive duration")
        require(self, "refresh_s", self.refresh_s >= 0, "a duration (0: automatic)")

    @property
    def interval(self) -> int:
        return int(self.interval_s)

    @property
    def poll_s(self) -> float:
        """Agent poll: five dumps per interval, at most every 5 s."""
        return min(5.0, self.interval_s / 5)

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def clickhouse_dir(self) -> Path:
        return self.root / "clickhouse"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def agent_dir(self, node: str) -> Path:
        return self.root / "agent" / node

    @property
    def generated_inventory(self) -> Path:
        return self.root / "inventory.json"


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, UpSettings, title="kubenetmon up")


def up_settings(args: argparse.Namespace, *, environ: Mapping[str, str]) -> UpSettings:
    """Settings from flags; the data directory and node name defaults are resolved here, at the edge."""
    overrides: dict[str, object] = {}
    overrides["data_dir"] = os.path.abspath(args.data_dir or default_data_dir(environ))
    if not args.node_name:
        overrides["node_name"] = socket.gethostname()
    return from_args(UpSettings, args, **overrides)
