"""Cloud provider IP ranges: parse the providers' published JSON, resolve duplicates, build the table.

Why it exists: the connection class of a flow (labeling spec §5-6) depends on which cloud, service and
region own the remote address. This module turns AWS ``ip-ranges.json``, GCP ``cloud.json``, Google
``goog.json`` and Azure Service Tags documents, plus user-defined CIDR entries, into one
longest-prefix table of ``Range`` values, applying the spec's normalisation and duplicate priorities.

It must not do I/O (see ``sources``) and must not decide connection classes (see ``labeler``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from kubenetmon.enricher.prefixes import Network, PrefixTable, parse_network
from kubenetmon.shared.errors import ConfigError

PROVIDERS: Final = ("aws", "gcp", "goog", "azure")
GLOBAL: Final = "global"
_AWS_RANK: Final = {"s3": 3, "amazon": 1, "ec2": 0}  # any other service: 2
_AZURE_GENERIC: Final = frozenset({"", "azurecloud", "azureservice"})


class Range(NamedTuple):
    """What the table knows about an address range. Strings are normalised."""

    cloud: str
    service: str
    region: str
    zone: str = ""
    name: str = ""
    cluster: str = ""
    user: bool = False
    """A user-defined entry (overrides provider data, applies to private ranges too)."""
    private: bool = False
    """Inside a private range (RFC 1918, CGNAT, link-local, ... or a configured private CIDR)."""


PRIVATE: Final = Range("", "", "", private=True)


def normalise(text: object) -> str:
    """Lower-case, spaces removed (labeling spec §6)."""
    return str(text or "").lower().replace(" ", "")


def detect(doc: Mapping[str, Any]) -> str:
    """Which provider format a parsed document is in; ConfigError if none."""
    if isinstance(doc.get("values"), list):
        return "azure"
    prefixes = doc.get("prefixes")
    if isinstance(prefixes, list):
        if "ipv6_prefixes" in doc or any(isinstance(p, dict) and "ip_prefix" in p for p in prefixes[:50]):
            return "aws"
        if any(isinstance(p, dict) and "scope" in p for p in prefixes[:50]):
            return "gcp"
        return "goog"
    raise ConfigError("not a known cloud range document (AWS, GCP cloud.json, goog.json or Azure)")


def parse(doc: Mapping[str, Any], *, provider: str | None = None) -> dict[Network, Range]:
    """Parse one provider document into unique prefixes, duplicates resolved by the spec's priorities."""
    kind = provider or detect(doc)
    parser = {"aws": _aws, "gcp": _gcp, "goog": _goog, "azure": _azure}.get(kind)
    if parser is None:
        raise ConfigError(f"unknown range provider {kind!r} (want one of {', '.join(PROVIDERS)})")
    return parser(doc)


def _aws(doc: Mapping[str, Any]) -> dict[Network, Range]:
    out: dict[Network, Range] = {}
    entries = [(p.get("ip_prefix"), p) for p in doc.get("prefixes") or ()]
    entries += [(p.get("ipv6_prefix"), p) for p in doc.get("ipv6_prefixes") or ()]
    for text, p in entries:
        if not text:
            continue
        net = parse_network(text)
        new = Range("aws", normalise(p.get("service")), normalise(p.get("region")))
        old = out.get(net)
        # S3, then other services, then AMAZON, then EC2; on a tie the later entry wins.
        if old is None or _AWS_RANK.get(new.service, 2) >= _AWS_RANK.get(old.service, 2):
            out[net] = new
    return out


def _gcp(doc: Mapping[str, Any]) -> dict[Network, Range]:
    out: dict[Network, Range] = {}
    for p in doc.get("prefixes") or ():
        text = p.get("ipv4Prefix") or p.get("ipv6Prefix")
        if text:
            out[parse_network(text)] = Range("gcp", normalise(p.get("service")), normalise(p.get("scope")))
    return out


def _goog(doc: Mapping[str, Any]) -> dict[Network, Range]:
    value = Range("gcp", "googleservice", GLOBAL)
    texts = (p.get("ipv4Prefix") or p.get("ipv6Prefix") for p in doc.get("prefixes") or ())
    return {parse_network(text): value for text in texts if text}


def _azure_rank(r: Range) -> tuple[bool, bool, bool]:
    """Azure duplicates: ``azurestorage`` first, then a specific service, then a specific region."""
    return (r.service == "azurestorage", r.service not in _AZURE_GENERIC, r.region != GLOBAL)


def _azure(doc: Mapping[str, Any]) -> dict[Network, Range]:
    out: dict[Network, Range] = {}
    for group in doc.get("values") or ():
        props = group.get("properties") or {}
        service = normalise(props.get("systemService"))
        if not service:
            service = "azurecloud" if "azurecloud" in normalise(group.get("name")) else "azureservice"
        new = Range("azure", service, normalise(props.get("region")) or GLOBAL)
        for text in props.get("addressPrefixes") or ():
            net = parse_network(text)
            old = out.get(net)
            if old is None or _azure_rank(new) > _azure_rank(old):
                out[net] = new
    return out


def merge(parsed: Sequence[tuple[str, Mapping[Network, Range]]]) -> dict[Network, Range]:
    """Merge per-provider tables: AWS, GCP cloud.json, goog.json (overwrites cloud.json), Azure."""
    order = {kind: i for i, kind in enumerate(PROVIDERS)}
    out: dict[Network, Range] = {}
    for _, table in sorted(parsed, key=lambda item: order.get(item[0], len(order))):
        out.update(table)
    return out


@dataclass(frozen=True, slots=True)
class UserRange:
    """A user-defined CIDR entry; empty cloud/region mean "the local ones"."""

    cidr: str
    name: str = ""
    zone: str = ""
    service: str = ""
    cloud: str = ""
    region: str = ""
    cluster: str = ""


def parse_user(doc: Any) -> list[UserRange]:
    """User entries from a list, or a map with ``ranges``/``prefixes`` (kubenetmon's custom format)."""
    items = doc.get("ranges", doc.get("prefixes")) if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise ConfigError("custom ranges: expected a list of entries or a map with 'ranges'")
    out = []
    for item in items:
        cidr = (
            item.get("cidr") or item.get("ip_prefix") or item.get("ipv6_prefix")
            if isinstance(item, Mapping)
            else None
        )
        if not cidr:
            raise ConfigError(f"custom ranges: entry without 'cidr': {item!r:.80}")
        try:
            parse_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"custom ranges: {exc}") from None
        out.append(
            UserRange(
                cidr=cidr,
                name=str(item.get("name") or ""),
                zone=str(item.get("zone") or item.get("az") or ""),
                service=normalise(item.get("service")),
                cloud=normalise(item.get("cloud")),
                region=normalise(item.get("region")),
                cluster=str(item.get("cluster") or ""),
            )
        )
    return out


def _with_private(below: Range | None, above: Range) -> Range:
    """Overlay rule: a user entry inside a private range stays marked private."""
    if below is not None and below.private and above.user:
        return above._replace(private=True)
    return above


def build_table(
    provider: Mapping[Network, Range],
    *,
    private: Iterable[str],
    user: Iterable[UserRange] = (),
) -> PrefixTable[Range]:
    """One table: provider prefixes, private ranges on top, then user entries on top of both."""
    private_layer = [(parse_network(cidr), PRIVATE) for cidr in private]
    user_layer = [
        (
            parse_network(u.cidr),
            Range(u.cloud, u.service, u.region, zone=u.zone, name=u.name, cluster=u.cluster, user=True),
        )
        for u in user
    ]
    return PrefixTable([provider.items(), private_layer, user_layer], combine=_with_private)
