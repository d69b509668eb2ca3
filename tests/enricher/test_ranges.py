"""Cloud range parsing, duplicate priorities, user entries, and the longest-prefix table."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from kubenetmon.enricher import ranges
from kubenetmon.enricher.connclass import DEFAULT_PRIVATE
from kubenetmon.enricher.prefixes import PrefixTable, parse_network
from kubenetmon.enricher.ranges import Range
from kubenetmon.enricher.sources import read_document
from kubenetmon.shared.errors import ConfigError

DATA = Path(__file__).parent / "data"


def doc(name: str) -> dict:  # type: ignore[type-arg]
    return read_document(DATA / name)  # type: ignore[no-any-return]


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return parse_network(text)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("aws-ip-ranges.json", "aws"),
        ("gcp-cloud.json", "gcp"),
        ("goog.json", "goog"),
        ("azure-servicetags.json", "azure"),
    ],
)
def test_detects_each_provider_format(name: str, kind: str) -> None:
    assert ranges.detect(doc(name)) == kind


def test_detect_refuses_other_documents() -> None:
    with pytest.raises(ConfigError):
        ranges.detect({"items": []})
    with pytest.raises(ConfigError):
        ranges.parse({"prefixes": []}, provider="oracle")


def test_aws_priorities_s3_then_others_then_amazon_then_ec2() -> None:
    table = ranges.parse(doc("aws-ip-ranges.json"))
    assert table[net("3.5.140.0/22")] == Range("aws", "s3", "ap-northeast-2")  # AMAZON, S3, EC2
    assert table[net("13.34.0.0/16")].service == "amazon"  # AMAZON over EC2
    assert table[net("13.34.64.0/18")].service == "route53_healthchecks"  # a service over EC2
    assert table[net("99.77.0.0/18")].service == "amazonconnect"  # spaces removed, over AMAZON
    assert table[net("52.94.76.0/22")] == Range("aws", "amazon", "global")  # GLOBAL normalised
    assert table[net("54.239.0.0/28")].region == ""  # kept: the labeler counts it as UNKNOWN


def test_aws_ipv6_prefixes() -> None:
    table = ranges.parse(doc("aws-ip-ranges.json"))
    assert table[net("2600:1f14::/35")] == Range("aws", "amazon", "us-west-2")
    assert table[net("2600:1f14:4000::/36")].service == "s3"
    assert table[net("2406:da1c::/36")].region == "af-south-1"


def test_gcp_cloud_json() -> None:
    table = ranges.parse(doc("gcp-cloud.json"))
    assert table[net("34.73.0.0/16")] == Range("gcp", "googlecloud", "us-east1")
    assert table[net("2600:1901:8100::/40")] == Range("gcp", "googlecloud", "europe-west1")


def test_goog_json_is_googleservice_global() -> None:
    table = ranges.parse(doc("goog.json"))
    assert set(table.values()) == {Range("gcp", "googleservice", "global")}
    assert net("2001:4860::/32") in table


def test_goog_overwrites_identical_cloud_json_prefixes_and_longer_prefixes_still_win() -> None:
    merged = ranges.merge(
        [("goog", ranges.parse(doc("goog.json"))), ("gcp", ranges.parse(doc("gcp-cloud.json")))]
    )
    assert merged[net("35.190.0.0/17")].service == "googleservice"  # same prefix in both files
    table = ranges.build_table(merged, private=DEFAULT_PRIVATE)
    assert table.lookup_text("34.73.1.1") == Range("gcp", "googlecloud", "us-east1")  # /16 inside goog /9
    assert table.lookup_text("34.100.0.1") == Range("gcp", "googleservice", "global")


def test_azure_priorities() -> None:
    table = ranges.parse(doc("azure-servicetags.json"))
    # a regional generic tag over the global generic one
    assert table[net("20.38.0.0/16")] == Range("azure", "azurecloud", "eastus")
    # a specific service over generic; its specific region over its global tag (case-insensitive)
    assert table[net("20.38.98.0/24")] == Range("azure", "azuremonitor", "eastus")
    # azurestorage over any other service, whatever the order
    assert table[net("13.64.10.0/24")] == Range("azure", "azurestorage", "westeurope")
    assert table[net("13.107.246.0/24")] == Range("azure", "azurefrontdoor", "global")
    assert table[net("2603:1030:210::/47")].region == "eastus"


def test_azure_priorities_do_not_depend_on_order() -> None:
    document = doc("azure-servicetags.json")
    forward = ranges.parse(document)
    document["values"].reverse()
    assert ranges.parse(document) == forward


def test_user_entries_both_formats() -> None:
    ours = ranges.parse_user(doc("custom-ranges.yaml"))
    assert ours[0] == ranges.UserRange(
        "10.16.1.16/32", name="redis-primary", zone="us-west-2b", service="redis"
    )
    assert ours[2].cluster == "peer-cluster" and ours[2].region == "us-east-1"
    theirs = ranges.parse_user(doc("custom-kubenetmon.json"))
    assert theirs == [ranges.UserRange("10.16.1.16/32", zone="ap-southeast-2b", service="redis")]
    with pytest.raises(ConfigError):
        ranges.parse_user({"ranges": [{"name": "no cidr"}]})
    with pytest.raises(ConfigError):
        ranges.parse_user([{"cidr": "10.0.0.0/33"}])


def test_user_entries_override_provider_data_and_mark_private_ranges() -> None:
    provider = ranges.parse(doc("aws-ip-ranges.json"))
    table = ranges.build_table(
        provider, private=DEFAULT_PRIVATE, user=ranges.parse_user(doc("custom-ranges.yaml"))
    )
    # a user /25 inside a provider /24 (and a shorter user prefix over a longer provider one both win)
    partner = table.lookup_text("13.34.66.1")
    assert partner is not None and partner.user and partner.name == "partner-gateway" and not partner.private
    assert table.lookup_text("13.34.66.200") == Range("aws", "ec2", "us-west-2")  # outside the user /25
    redis = table.lookup_text("10.16.1.16")
    assert redis is not None and redis.user and redis.private and redis.zone == "us-west-2b"
    assert table.lookup_text("10.16.1.17") == ranges.PRIVATE
    v6 = table.lookup_text("fd00:10::5")
    assert v6 is not None and v6.private and v6.service == "db"
    assert table.lookup_text("8.8.8.8") is None


def _brute_force(entries: list[tuple[int, int, int, int]], addr: int) -> int | None:
    """Longest prefix by scanning every (first, last, length, value); the last of equals wins."""
    best: tuple[int, int] | None = None
    for first, last, length, value in entries:
        if first <= addr <= last and (best is None or length >= best[0]):
            best = (length, value)
    return None if best is None else best[1]


def _random_prefixes(rnd: random.Random, version: int, count: int) -> list[str]:
    bits = 32 if version == 4 else 128
    out = []
    for _ in range(count):
        length = rnd.randint(4, bits)
        base = rnd.getrandbits(bits) & ~((1 << (bits - length)) - 1)
        # cluster prefixes so that nesting is common
        base = (base & ((1 << (bits - 6)) - 1)) | (rnd.randint(0, 3) << (bits - 6))
        base &= ~((1 << (bits - length)) - 1)
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        out.append(str(cls((base, length))))
    return out


@pytest.mark.parametrize("version", [4, 6])
def test_lookup_matches_brute_force_on_random_addresses(version: int) -> None:
    rnd = random.Random(version)
    prefixes = _random_prefixes(rnd, version, 400)
    entries = [(p, i) for i, p in enumerate(prefixes)]
    # later duplicates of the same prefix win, as in the brute force (>=)
    table: PrefixTable[int] = PrefixTable([[(parse_network(p), v) for p, v in entries]])
    bits = 32 if version == 4 else 128
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    probes = [
        cls(rnd.getrandbits(bits) & ((1 << (bits - 6)) - 1) | (rnd.randint(0, 3) << (bits - 6)))
        for _ in range(1500)
    ]
    probes += [parse_network(p).network_address for p in prefixes[:200]]
    probes += [parse_network(p).broadcast_address for p in prefixes[:200]]
    nets = [(parse_network(p), v) for p, v in entries]
    spans = [(int(n.network_address), int(n.broadcast_address), n.prefixlen, v) for n, v in nets]
    for addr in probes:
        assert table.lookup(addr.packed) == _brute_force(spans, int(addr)), addr


def test_layers_override_whatever_the_prefix_length() -> None:
    base = [(parse_network("10.0.0.0/24"), "provider")]
    top = [(parse_network("10.0.0.0/8"), "user")]
    table: PrefixTable[str] = PrefixTable([base, top])
    assert table.lookup_text("10.0.0.1") == "user"
    assert table.lookup_text("11.0.0.1") is None


def test_ipv4_mapped_ipv6_uses_the_ipv4_table() -> None:
    table: PrefixTable[str] = PrefixTable([[(parse_network("192.0.2.0/24"), "doc")]])
    assert table.lookup_text("::ffff:192.0.2.7") == "doc"
    assert table.lookup(bytes([192, 0, 2, 7])) == "doc"


def test_map_values_keeps_segments_and_maps_no_match() -> None:
    table: PrefixTable[str] = PrefixTable(
        [[(parse_network("192.0.2.0/24"), "a"), (parse_network("2001:db8::/32"), "b")]]
    )
    mapped = table.map_values(lambda v: (v or "none").upper())
    assert mapped.lookup_text("192.0.2.1") == "A"
    assert mapped.lookup_text("2001:db8::1") == "B"
    assert mapped.lookup_text("198.51.100.1") == "NONE"
    assert mapped.segments == table.segments
