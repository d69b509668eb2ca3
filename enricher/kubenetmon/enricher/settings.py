"""The enricher's flags, and the settings objects each part receives, built once at the entry point.

Why it exists: one declaration per setting (flag, ``KUBENETMON_*`` variable, default, unit, help) shared
by ``kubenetmon enricher`` and ``kubenetmon label``; ``EnricherSettings`` then hands each part its own
frozen settings (``LabelSettings``, ``RangeSettings``, ``WatchSettings``) so library code never sees
flags or the environment.

It must not import the Kubernetes client, NATS or Prometheus: it describes configuration only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Final

from kubenetmon.enricher.connclass import CLOUDS, LabelSettings
from kubenetmon.enricher.plausible import Bounds
from kubenetmon.enricher.sources import RangeSettings
from kubenetmon.enricher.watch import WatchSettings
from kubenetmon.shared.options import add_arguments, from_args, option, require

_DAY: Final = 86400.0
_LISTS: Final = "labeling: switches and lists"
_PLAUSIBLE: Final = "plausibility (reports that cannot be true are dead-lettered, never stored)"
METADATA_SOURCES: Final = ("watch", "meta")


@dataclass(frozen=True)
class LabelOptions:
    """Where this cluster runs and what the labeler keeps (shared by ``enricher`` and ``label``)."""

    cloud: str = option("other", flag="--cloud", choices=CLOUDS, help="local cloud")
    region: str = option(
        "", flag="--region", metavar="NAME", help="local region, as the cloud provider names it"
    )
    cluster: str = option("", flag="--cluster", metavar="NAME", help="this cluster's name (localCluster)")
    environment: str = option(
        "", flag="--environment", metavar="NAME", help="environment column (e.g. production)"
    )
    cell: str = option("", flag="--cell", metavar="NAME", help="cell column of local endpoints")
    ranges_cache: str = option(
        "", flag="--ranges-cache-dir", metavar="DIR", help="directory caching downloaded range files"
    )
    ranges_refresh_s: float = option(
        _DAY, flag="--ranges-refresh", kind="duration", help="refresh period of URL range sources (0: never)"
    )
    pod_grace_s: float = option(
        900.0, flag="--pod-grace", kind="duration", help="how long a deleted pod's IP stays attributable"
    )
    inventory: str = option(
        "", flag="--inventory", metavar="FILE", help="static Kubernetes List (YAML/JSON) instead of watching"
    )
    ignore_udp: bool = option(
        False, flag="--ignore-udp", kind="switch", group=_LISTS, help="drop UDP flows (default: kept)"
    )
    private_cidrs: tuple[str, ...] = option(
        (),
        flag="--private-cidr",
        dest="private_cidrs",
        kind="append",
        metavar="VALUE",
        group=_LISTS,
        help="extra private CIDR treated as INTRA_VPC (repeatable, or comma-separated)",
    )
    ranges: tuple[str, ...] = option(
        (),
        flag="--ranges",
        kind="append",
        metavar="VALUE",
        group=_LISTS,
        help="cloud range file or URL (repeatable, or comma-separated); aws=, gcp=, goog=, azure= name a "
        "format",
    )
    custom_ranges: tuple[str, ...] = option(
        (),
        flag="--custom-ranges",
        kind="append",
        metavar="VALUE",
        group=_LISTS,
        help="YAML/JSON file of user CIDR entries: cidr, name, zone, service (repeatable)",
    )

    def __post_init__(self) -> None:
        require(self, "pod_grace_s", self.pod_grace_s > 0, "a positive duration")
        require(self, "ranges_refresh_s", self.ranges_refresh_s >= 0, "a duration (0: never)")

    def label(self) -> LabelSettings:
        return LabelSettings(
            cloud=self.cloud,
            region=self.region,
            cluster=self.cluster,
            environment=self.environment,
            cell=self.cell,
            ignore_udp=self.ignore_udp,
            private_cidrs=self.private_cidrs,
        )

    def range_sources(self) -> RangeSettings:
        return RangeSettings(
            sources=self.ranges,
            custom=self.custom_ranges,
            cache_dir=self.ranges_cache,
            refresh_seconds=self.ranges_refresh_s,
        )


@dataclass(frozen=True)
class EnricherOptions:
    """The enricher service: how it follows Kubernetes and consumes RAW."""

    kubeconfig: str = option(
        "", flag="--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster, then ~/.kube)"
    )
    kube_context: str = option(
        "", flag="--kube-context", metavar="NAME", help="kubeconfig context (default: current)"
    )
    watch_timeout_s: float = option(
        300.0, flag="--watch-timeout", kind="duration", help="server-side timeout of one watch request"
    )
    batch: int = option(32, flag="--batch", kind="int", help="RAW messages fetched per batch")
    fetch_timeout_s: float = option(
        1.0, flag="--fetch-timeout", kind="duration", help="longest wait of one fetch (bounds stop latency)"
    )
    max_rows: int = option(
        1000,
        flag="--enriched-max-rows",
        kind="int",
        help="rows per ENRICHED message (bigger outputs are split)",
    )
    max_flow_gbps: float = option(
        400.0,
        flag="--max-flow-gbps",
        kind="float",
        group=_PLAUSIBLE,
        help="largest rate one flow may count per direction, Gbit/s over its report's span; a report "
        "with a larger counter is dead-lettered (counter)",
    )
    interval_s: float = option(
        60.0,
        flag="--interval",
        kind="duration",
        group=_PLAUSIBLE,
        help="the agents' report interval: a report whose start or length is not a multiple of it is "
        "dead-lettered (unaligned); 0: not checked",
    )
    max_clock_skew_s: float = option(
        300.0,
        flag="--max-clock-skew",
        kind="duration",
        group=_PLAUSIBLE,
        help="a report starting further ahead of the enricher's clock is dead-lettered (future)",
    )
    ttl_days: int = option(
        90,
        flag="--ttl-days",
        kind="int",
        group=_PLAUSIBLE,
        help="the writer's --ttl-days: a report older than the flows table keeps rows is dead-lettered "
        "(expired) instead of stored and silently removed; 0: forever",
    )

    def __post_init__(self) -> None:
        require(self, "max_flow_gbps", self.max_flow_gbps >= 0, "a rate >= 0 (0: no bound)")
        require(
            self, "interval_s", 0 <= self.interval_s and float(self.interval_s).is_integer(), "whole seconds"
        )
        require(self, "max_clock_skew_s", self.max_clock_skew_s >= 0, "a duration")
        require(self, "ttl_days", self.ttl_days >= 0, "a number of days (0: forever)")
        require(self, "batch", 1 <= self.batch <= 1000, "an integer from 1 to 1000")
        require(self, "fetch_timeout_s", self.fetch_timeout_s > 0, "a positive duration")
        require(self, "watch_timeout_s", self.watch_timeout_s >= 1, "a duration of at least 1s")
        require(self, "max_rows", self.max_rows >= 2, "an integer >= 2")

    def watch(self) -> WatchSettings:
        return WatchSettings(
            kubeconfig=self.kubeconfig, context=self.kube_context, watch_timeout_s=self.watch_timeout_s
        )

    def bounds(self) -> Bounds:
        return Bounds(
            max_flow_gbps=self.max_flow_gbps,
            interval_s=int(self.interval_s),
            max_clock_skew_s=self.max_clock_skew_s,
            ttl_days=self.ttl_days,
        )


@dataclass(frozen=True)
class SourceOptions:
    """Where an enricher's index comes from (``--inventory`` aside)."""

    metadata_source: str = option(
        "watch",
        flag="--metadata-source",
        choices=METADATA_SOURCES,
        help="watch: each process lists and watches the API server itself (small clusters, `up`); "
        "meta: build the index from the META stream the `kubenetmon metadata` role records (no API "
        "access needed; one watcher for any number of enrichers)",
    )


@dataclass(frozen=True)
class HistoryOptions:
    """The metadata history the enricher records on the META stream (for ``replay raw --metadata as-of``)."""

    enabled: bool = option(
        True,
        flag="--metadata-history",
        kind="bool",
        help="record every Pod/Node/Service change this enricher observes on the META stream",
    )
    snapshot_s: float = option(
        _DAY,
        flag="--metadata-snapshot",
        kind="duration",
        help="period of full snapshots in META, aligned to UTC (0: none); keep --nats-meta-max-age "
        "above --nats-raw-max-age plus this period",
    )

    def __post_init__(self) -> None:
        require(self, "snapshot_s", self.snapshot_s >= 0, "a duration (0: no snapshots)")
        require(self, "snapshot_s", self.snapshot_s == 0 or self.snapshot_s >= 60, "at least 1m, or 0")


@dataclass(frozen=True)
class MetadataOptions:
    """The ``metadata`` role: one active replica lists and watches, and records META for the enrichers."""

    kubeconfig: str = option(
        "", flag="--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster, then ~/.kube)"
    )
    kube_context: str = option(
        "", flag="--kube-context", metavar="NAME", help="kubeconfig context (default: current)"
    )
    watch_timeout_s: float = option(
        300.0, flag="--watch-timeout", kind="duration", help="server-side timeout of one watch request"
    )
    lease_ttl_s: float = option(
        15.0,
        flag="--lease-ttl",
        kind="duration",
        help="lease of the active replica in the NATS key-value bucket: renewed every quarter of it; "
        "a replica that dies is replaced within it",
    )
    snapshot_s: float = option(
        3600.0,
        flag="--metadata-snapshot",
        kind="duration",
        help="period of full snapshots in META (also one at each takeover); a restarting enricher "
        "reads from the latest one",
    )
    holder: str = option(
        "",
        flag="--lease-holder",
        metavar="NAME",
        help="this replica's name in the lease (default: host name/pid)",
    )

    def __post_init__(self) -> None:
        require(self, "lease_ttl_s", self.lease_ttl_s >= 1, "a duration of at least 1s")
        require(self, "snapshot_s", self.snapshot_s >= 60, "a duration of at least 1m")
        require(self, "watch_timeout_s", self.watch_timeout_s >= 1, "a duration of at least 1s")

    def watch(self) -> WatchSettings:
        return WatchSettings(
            kubeconfig=self.kubeconfig, context=self.kube_context, watch_timeout_s=self.watch_timeout_s
        )


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, LabelOptions, title="labeling")


def label_options(args: argparse.Namespace) -> LabelOptions:
    return from_args(LabelOptions, args)


def add_enricher_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, EnricherOptions, title="enricher")


def enricher_options(args: argparse.Namespace) -> EnricherOptions:
    return from_args(EnricherOptions, args)


def add_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, MetadataOptions, title="metadata")


def metadata_options(args: argparse.Namespace) -> MetadataOptions:
    return from_args(MetadataOptions, args)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, SourceOptions, title="metadata source")


def source_options(args: argparse.Namespace) -> SourceOptions:
    return from_args(SourceOptions, args)


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, HistoryOptions, title="metadata history")


def history_options(args: argparse.Namespace) -> HistoryOptions:
    return from_args(HistoryOptions, args)


@dataclass(frozen=True)
class AuthOptions:
    """The ``auth`` role: answers nats-server's auth callout for agents (one NATS user per node)."""

    kubeconfig: str = option(
        "", flag="--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster, then ~/.kube)"
    )
    kube_context: str = option(
        "", flag="--kube-context", metavar="NAME", help="kubeconfig context (default: current)"
    )
    kube_timeout_s: float = option(
        2.0,
        flag="--kube-timeout",
        kind="duration",
        help="timeout of one API request (TokenReview, GET pod); keep both under the server's "
        "authorization timeout",
    )
    issuer_seed_file: str = option(
        "",
        flag="--auth-issuer-seed-file",
        metavar="FILE",
        help="file holding the account nkey seed (SA...) that signs the users; its public key is the "
        "server's auth_callout issuer",
    )
    audience: str = option(
        "kubenetmon",
        flag="--token-audience",
        metavar="NAME",
        help="audience the agents' tokens must have",
        secret=False,  # a name, not a token
    )
    agent_service_account: str = option(
        "kubenetmon:kubenetmon-agent",
        flag="--agent-service-account",
        metavar="NAMESPACE:NAME",
        help="the only ServiceAccount whose tokens are accepted (any pod may mint a token for any audience)",
    )
    account: str = option(
        "$G",
        flag="--auth-account",
        metavar="NAME",
        help="account the agents' users are placed in ($G: a server without accounts)",
    )
    concurrency: int = option(
        32, flag="--auth-concurrency", kind="int", help="authorization requests handled at once"
    )

    def __post_init__(self) -> None:
        namespace, _, name = self.agent_service_account.partition(":")
        require(self, "agent_service_account", bool(namespace and name), "NAMESPACE:NAME")
        require(self, "audience", bool(self.audience), "an audience")
        require(self, "kube_timeout_s", self.kube_timeout_s > 0, "a positive duration")
        require(self, "concurrency", self.concurrency >= 1, "an integer >= 1")

    @property
    def watch(self) -> WatchSettings:
        return WatchSettings(
            kubeconfig=self.kubeconfig, context=self.kube_context, request_timeout_s=self.kube_timeout_s
        )


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, AuthOptions, title="auth callout")


def auth_options(args: argparse.Namespace) -> AuthOptions:
    return from_args(AuthOptions, args)
