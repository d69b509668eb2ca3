"""Labeling settings and connection classes: what a remote address means, given where we run.

Why it exists: the connection class (labeling spec §5) depends only on the remote address's range
and the configured local cloud and region, so it is decided once per distinct range when a range
table is loaded (``remote_table``), not once per record. ``LabelSettings`` is the validated
configuration of the labeler, built at the entry point.

It must not do I/O and must not look at pods: a remote known pod only changes the endpoint
attributes, never the class (that is taken from its IP, as the spec says).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from kubenetmon.enricher.prefixes import PrefixTable, parse_network
from kubenetmon.enricher.ranges import GLOBAL, Range, normalise
from kubenetmon.shared.errors import ConfigError

CLOUDS: Final = ("aws", "gcp", "azure", "other")
UNKNOWN: Final = "UNKNOWN"
INTRA_VPC: Final = "INTRA_VPC"
INTRA_REGION: Final = "INTRA_REGION"
INTER_REGION: Final = "INTER_REGION"
PUBLIC_INTERNET: Final = "PUBLIC_INTERNET"

DEFAULT_PRIVATE: Final = (
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # CGNAT (RFC 6598)
    "169.254.0.0/16",  # link-local
    "0.0.0.0/8",  # unspecified / this network
    "127.0.0.0/8",  # loopback
    "224.0.0.0/24",  # local network control multicast
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "::/128",  # unspecified
    "::1/128",  # loopback
    "ff01::/16",  # interface-local multicast
    "ff02::/16",  # link-local multicast
)


@dataclass(frozen=True, slots=True)
class LabelSettings:
    """The labeler's configuration: where this cluster runs and what to keep."""

    cloud: str = "other"
    """Local cloud: aws, gcp, azure or other."""
    region: str = ""
    """Local region as the provider names it (normalised: lower-case, no spaces)."""
    cluster: str = ""
    environment: str = ""
    cell: str = ""
    ignore_udp: bool = False
    """Drop UDP flows (kubenetmon's option; off by default: UDP bytes are kept)."""
    node_flows: bool = True
    """Meter the observer's own node's flows as node rows (``nodeflows``); off: drop them, as the spec did."""
    private_cidrs: tuple[str, ...] = ()
    """Extra ranges treated as private (INTRA_VPC), on top of ``DEFAULT_PRIVATE``."""

    def __post_init__(self) -> None:
        cloud = normalise(self.cloud)
        if cloud not in CLOUDS:
            raise ConfigError(f"unknown cloud {self.cloud!r} (want one of {', '.join(CLOUDS)})")
        object.__setattr__(self, "cloud", cloud)
        object.__setattr__(self, "region", normalise(self.region))
        for cidr in self.private_cidrs:
            try:
                parse_network(cidr)
            except ValueError as exc:
                raise ConfigError(f"private CIDR {cidr!r}: {exc}") from None

    @property
    def private(self) -> tuple[str, ...]:
        return DEFAULT_PRIVATE + tuple(self.private_cidrs)


class Remote(NamedTuple):
    """What a remote address means: class and the remote endpoint's range-derived attributes."""

    cls: str
    cloud: str
    region: str
    service: str
    unknown: bool
    """Same cloud but no region: class ``UNKNOWN`` (counted)."""
    fields: tuple[str, ...]
    """remote Cloud, Region, Cluster, Cell, AvailabilityZone, Node, InstanceID, Namespace, Pod."""


def _remote(cls: str, cloud: str, region: str, service: str, zone: str = "", cluster: str = "") -> Remote:
    fields = (cloud, region, cluster or UNKNOWN, UNKNOWN, zone, "", "", "", "")
    return Remote(cls, cloud, region, service, cls == UNKNOWN, fields)


def classify(r: Range | None, s: LabelSettings) -> Remote:
    """The connection class of a remote address whose longest range match is ``r``."""
    if r is None:
        return _remote(PUBLIC_INTERNET, "", "", "")
    if r.user:
        cloud, region = r.cloud or s.cloud, r.region or s.region
    elif r.private:
        return _remote(INTRA_VPC, s.cloud, s.region, "")
    else:
        cloud, region = r.cloud, r.region
    if r.private and cloud == s.cloud and region == s.region:
        cls = INTRA_VPC
    elif cloud != s.cloud:
        cls = PUBLIC_INTERNET
    elif not region:
        cls = UNKNOWN
    elif region in (GLOBAL, s.region):
        cls = INTRA_REGION
    else:
        cls = INTER_REGION
    return _remote(cls, cloud, region, r.service, r.zone, r.cluster)


def remote_table(ranges: PrefixTable[Range], settings: LabelSettings) -> PrefixTable[Remote]:
    """The range table with every distinct range replaced by its precomputed ``Remote``."""
    return ranges.map_values(lambda r: classify(r, settings))
