"""The labeling spec as a table: every rule, every example of labeling.md, and the cases it leaves out."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.enricher import ranges, sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import FlowIds, Labeler
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.shared import schema
from kubenetmon.shared.errors import ConfigError
from tests.support.builders import T0, message, node, pod, raw_row, service

DATA = Path(__file__).parent / "data"
N = "n1"  # the observer
AWS = LabelSettings(cloud="aws", region="us-west-2", cluster="prod-1", environment="production", cell="c1")
MAPPED = bytes(10) + b"\xff\xff"


def table(settings: LabelSettings = AWS) -> PrefixTable[ranges.Range]:
    files = ("aws-ip-ranges.json", "gcp-cloud.json", "goog.json", "azure-servicetags.json")
    return sources.load_table(
        sources.RangeSettings(
            sources=tuple(str(DATA / f) for f in files), custom=(str(DATA / "custom-ranges.yaml"),)
        ),
        private=settings.private,
    )


def cluster(pods: list[dict[str, Any]] = (), extra_nodes: list[dict[str, Any]] = ()) -> Index:  # type: ignore[assignment]
    index = Index(grace_seconds=900)
    nodes = [
        node(
            "n1",
            "192.168.0.1",
            zone="us-west-2a",
            external="198.51.100.1",
            provider_id="aws:///us-west-2a/i-0n1",
        ),
        node("n2", "192.168.0.2", zone="us-west-2b", provider_id="aws:///us-west-2b/i-0n2"),
        node("n3", "192.168.0.3", zone="us-west-2a", provider_id="aws:///us-west-2a/i-0n3"),
        *extra_nodes,
    ]
    index.replace("nodes", nodes, now=T0 - 3000)
    index.replace("pods", pods, now=T0 - 3000)
    index.replace(
        "services",
        [
            service("kube-dns", "10.96.0.10", namespace="kube-system"),
            service("web", "10.96.0.20", node_ports=(30080,)),
            service("v6db", "fd00:96::1"),
        ],
        now=T0 - 3000,
    )
    return index


WEB = pod(
    "web-5d8f7-abcde",
    ["10.1.0.10", "fd00::10"],
    node="n1",
    labels={"app.kubernetes.io/name": "web", "k8s-app": "ignored", "pod-template-hash": "5d8f7"},
    owner=("ReplicaSet", "web-5d8f7"),
)
API = pod(
    "api-0", ["10.1.1.20", "fd00::20"], node="n2", labels={"k8s-app": "api"}, owner=("StatefulSet", "api")
)
DB = pod("db-0", "10.1.0.30", node="n1", labels={"app": "db"}, owner=("StatefulSet", "db"))
JOB = pod("backup-28000000-xyz", "10.1.0.40", node="n1", owner=("Job", "backup-28000000"))
CACHE = pod("cache-ds-1", "10.1.2.5", node="n3", owner=("DaemonSet", "cache"))
HOSTNET = pod(
    "node-exporter", "192.168.0.2", node="n2", host_network=True, owner=("DaemonSet", "node-exporter")
)
ALL = [WEB, API, DB, JOB, CACHE, HOSTNET]


def label(
    index: Index,
    row: schema.RawRow,
    *,
    settings: LabelSettings = AWS,
    start: int = T0,
    observer: str = N,
    ranges_table: PrefixTable[ranges.Range] | None = None,
) -> dict[str, dict[str, Any]] | str:
    """The out and in rows by column name, or the drop reason."""
    labeler = Labeler(settings, index=index, ranges=ranges_table or TABLE)
    drops: list[str] = []
    result = labeler.label(
        message([row], node=observer, start=start),
        enriched_at=123,
        on_drop=lambda i, r, why: drops.append(why),
    )
    if drops:
        assert result.stats.dropped[drops[0]] == 1 and result.stats.rows == 0
        return drops[0]
    assert result.columns == list(schema.COLUMN_NAMES)
    out = {c: v[0] for c, v in zip(result.columns, result.data, strict=True)}
    back = {c: v[1] for c, v in zip(result.columns, result.data, strict=True)}
    assert (out["direction"], back["direction"]) == ("out", "in")
    different = {c for c in out if out[c] != back[c]}
    assert different <= {"direction", "bytes", "packets", "flowId"}
    return {"out": out, "in": back}


TABLE = table()


def rows(result: dict[str, dict[str, Any]] | str) -> dict[str, dict[str, Any]]:
    assert isinstance(result, dict), f"dropped: {result}"
    return result


# ------------------------------------------------------------------------------------- examples


def test_example_1_udp_egress_snat_no_range_match() -> None:
    index = cluster([pod("p1", "10.0.0.1", node=N)])
    r = rows(label(index, raw_row("udp", ("10.0.0.1", 1, "1.2.3.4", 2), ("1.2.3.4", 2, "10.0.0.2", 1))))
    out, back = r["out"], r["in"]
    assert (out["localPod"], out["localIPv4"], out["localPort"]) == ("p1", 0x0A000001, 1)
    assert (out["remoteIPv4"], out["remotePort"], out["remotePod"]) == (0x01020304, 2, "")
    assert (out["packets"], out["bytes"], back["packets"], back["bytes"]) == (10, 11, 12, 13)
    assert out["connectionClass"] == "PUBLIC_INTERNET" and out["proto"] == "UDP"
    assert (out["remoteCloud"], out["remoteRegion"], out["remoteCloudService"]) == ("", "", "")


def test_example_2_to_pod_on_node_from_pod_on_other_node() -> None:
    index = cluster([pod("a", "10.0.0.1", node="n2"), pod("b", "10.0.0.2", node=N)])
    r = rows(label(index, raw_row("tcp", ("10.0.0.1", 1, "10.0.0.2", 2), ("10.0.0.2", 2, "10.0.0.1", 1))))
    out, back = r["out"], r["in"]
    assert (out["localPod"], out["localIPv4"], out["localPort"]) == ("b", 0x0A000002, 2)
    assert (out["remotePod"], out["remoteIPv4"], out["remotePort"]) == ("a", 0x0A000001, 1)
    assert (back["packets"], back["bytes"], out["packets"], out["bytes"]) == (10, 11, 12, 13)
    assert out["connectionClass"] == "INTRA_VPC"
    assert (out["remoteAvailabilityZone"], out["localAvailabilityZone"], out["crossZone"]) == (
        "us-west-2b",
        "us-west-2a",
        True,
    )
    assert (out["remoteCloud"], out["remoteRegion"]) == ("aws", "us-west-2")


def test_example_3_cluster_ip_backend_is_the_remote_and_the_service_is_recorded() -> None:
    index = cluster([pod("client", "10.0.0.1", node=N), pod("dns", "10.3.0.5", node="n2")])
    r = rows(
        label(index, raw_row("udp", ("10.0.0.1", 1, "10.96.0.10", 80), ("10.3.0.5", 8080, "10.0.0.1", 1)))
    )
    out = r["out"]
    assert (out["remotePod"], out["remoteIPv4"], out["remotePort"]) == ("dns", 0x0A030005, 8080)
    assert (out["remoteService"], out["localService"]) == ("kube-system/kube-dns", "")


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        ([], "both unknown"),
        ([pod("a", "10.0.0.1", node="n2"), pod("b", "10.0.0.2", node="n3")], "both on other nodes"),
    ],
)
def test_example_4_unknown_direction_is_dropped(pods: list[dict[str, Any]], why: str) -> None:
    result = label(
        cluster(pods), raw_row("tcp", ("10.0.0.1", 1, "10.0.0.2", 2), ("10.0.0.2", 2, "10.0.0.1", 1))
    )
    assert result == "direction", why


@pytest.mark.parametrize(
    ("orig", "reply"),
    [
        (("192.168.0.1", 5, "10.1.0.10", 80), ("10.1.0.10", 80, "192.168.0.1", 5)),  # from a node InternalIP
        (("10.1.0.10", 5, "192.168.0.2", 10250), ("192.168.0.2", 10250, "10.1.0.10", 5)),  # to a node
        (("198.51.100.1", 5, "10.1.0.10", 80), ("10.1.0.10", 80, "198.51.100.1", 5)),  # ExternalIP [ours]
        (("10.1.0.10", 5, "10.96.0.99", 9100), ("192.168.0.2", 9100, "10.1.0.10", 5)),  # hostNetwork pod peer
    ],
)
def test_example_5_node_flows_are_dropped_with_drop_node_flows(
    orig: tuple[str, int, str, int], reply: tuple[str, int, str, int]
) -> None:
    settings = dataclasses.replace(AWS, node_flows=False)
    assert label(cluster(ALL), raw_row("tcp", orig, reply), settings=settings) == "node"


@pytest.mark.parametrize(
    ("orig", "reply"),
    [
        (("10.1.0.10", 5, "192.168.0.2", 10250), ("192.168.0.2", 10250, "10.1.0.10", 5)),  # to a node
        (("10.1.0.10", 5, "10.96.0.99", 9100), ("192.168.0.2", 9100, "10.1.0.10", 5)),  # hostNetwork pod peer
    ],
)
def test_a_pod_and_another_nodes_address_stay_dropped(
    orig: tuple[str, int, str, int], reply: tuple[str, int, str, int]
) -> None:
    """The other node's agent meters them as its node rows; pod rows stay as they were."""
    assert label(cluster(ALL), raw_row("tcp", orig, reply)) == "node"


@pytest.mark.parametrize(
    ("remote", "cls", "region", "service"),
    [
        ("13.244.1.1", "INTER_REGION", "af-south-1", "ec2"),
        ("13.34.1.1", "INTRA_REGION", "us-west-2", "amazon"),
        ("52.94.76.5", "INTRA_REGION", "global", "amazon"),
        ("3.5.140.7", "INTER_REGION", "ap-northeast-2", "s3"),  # example 8: EC2 and S3 -> s3
    ],
)
def test_example_6_and_8_aws_regions_and_services(remote: str, cls: str, region: str, service: str) -> None:
    r = rows(
        label(
            cluster(ALL), raw_row("tcp", ("10.1.0.10", 4000, remote, 443), (remote, 443, "192.168.0.1", 4000))
        )
    )
    out = r["out"]
    assert (out["connectionClass"], out["remoteCloud"], out["remoteRegion"], out["remoteCloudService"]) == (
        cls,
        "aws",
        region,
        service,
    )


@pytest.mark.parametrize(
    ("remote", "cls", "region", "service"),
    [
        ("8.8.8.8", "INTRA_REGION", "global", "googleservice"),  # example 7
        ("34.73.1.1", "INTRA_REGION", "us-east1", "googlecloud"),
        ("34.118.1.1", "INTER_REGION", "europe-west1", "googlecloud"),
        ("13.34.1.1", "PUBLIC_INTERNET", "us-west-2", "amazon"),  # another cloud keeps its labels
    ],
)
def test_example_7_gcp(remote: str, cls: str, region: str, service: str) -> None:
    gcp = LabelSettings(cloud="gcp", region="us-east1", cluster="g", environment="e")
    r = rows(
        label(
            cluster(ALL),
            raw_row("tcp", ("10.1.0.10", 4000, remote, 443), (remote, 443, "192.168.0.1", 4000)),
            settings=gcp,
            ranges_table=table(gcp),
        )
    )
    out = r["out"]
    assert (out["connectionClass"], out["remoteRegion"], out["remoteCloudService"]) == (cls, region, service)
    assert out["localCloud"] == "gcp"


# ---------------------------------------------------------------------------- direction table


def test_between_pods_on_node_the_opener_is_local() -> None:
    r = rows(
        label(
            cluster(ALL),
            raw_row("tcp", ("10.1.0.30", 5432, "10.1.0.10", 80), ("10.1.0.10", 80, "10.1.0.30", 5432)),
        )
    )
    out, back = r["out"], r["in"]
    assert (out["localPod"], out["remotePod"]) == ("db-0", "web-5d8f7-abcde")
    assert (out["bytes"], back["bytes"]) == (11, 13)
    assert out["crossZone"] is False and out["connectionFlags"] == {"crossZone": False}


def test_src_unknown_dst_pod_on_another_node_makes_src_local() -> None:
    r = rows(
        label(
            cluster(ALL), raw_row("tcp", ("10.9.9.9", 7, "10.1.1.20", 80), ("10.1.1.20", 80, "10.9.9.9", 7))
        )
    )
    out, back = r["out"], r["in"]
    assert (out["localPod"], out["localIPv4"], out["remotePod"]) == ("", 0x0A090909, "api-0")
    assert (out["bytes"], back["bytes"]) == (11, 13)
    assert (out["localNamespace"], out["localAvailabilityZone"], out["crossZone"]) == ("", "", False)


def test_src_pod_on_another_node_dst_unknown_makes_dst_local() -> None:
    r = rows(
        label(
            cluster(ALL), raw_row("tcp", ("10.1.1.20", 7, "10.9.9.9", 80), ("10.9.9.9", 80, "10.1.1.20", 7))
        )
    )
    out, back = r["out"], r["in"]
    assert (out["localIPv4"], out["localPort"], out["remotePod"]) == (0x0A090909, 80, "api-0")
    assert (out["bytes"], back["bytes"]) == (13, 11)


def test_cross_node_pod_flow_sender_out_equals_receiver_in() -> None:
    index = cluster(ALL)
    row = raw_row("tcp", ("10.1.0.10", 4000, "10.1.1.20", 80), ("10.1.1.20", 80, "10.1.0.10", 4000))
    sender = rows(label(index, row, observer="n1"))
    receiver = rows(label(index, row, observer="n2"))
    assert sender["out"]["bytes"] == receiver["in"]["bytes"] == 11
    assert sender["in"]["bytes"] == receiver["out"]["bytes"] == 13
    assert receiver["out"]["localPod"] == "api-0" and receiver["out"]["remotePod"] == "web-5d8f7-abcde"


def test_nodeport_to_a_local_backend_records_the_service_on_the_local_side() -> None:
    row = raw_row(
        "tcp", ("203.0.113.9", 5555, "192.168.0.1", 30080), ("10.1.0.10", 8080, "203.0.113.9", 5555)
    )
    out = rows(label(cluster(ALL), row))["out"]
    assert (out["localPod"], out["localPort"], out["remoteIPv4"]) == ("web-5d8f7-abcde", 8080, 0xCB007109)
    assert (out["localService"], out["remoteService"], out["connectionClass"]) == (
        "default/web",
        "",
        "PUBLIC_INTERNET",
    )


def test_nodeport_snat_to_a_backend_on_another_node_follows_the_table() -> None:
    # client unknown, backend a pod on another node: the table makes the (unknown) source local.
    row = raw_row(
        "tcp", ("203.0.113.9", 5555, "192.168.0.1", 30080), ("10.1.1.20", 8080, "192.168.0.1", 61000)
    )
    out = rows(label(cluster(ALL), row))["out"]
    assert (out["localIPv4"], out["remotePod"], out["remoteService"]) == (0xCB007109, "api-0", "default/web")


# --------------------------------------------------------------------------------- drop rules


def test_udp_is_kept_by_default_and_dropped_when_ignored() -> None:
    row = raw_row("udp", ("10.1.0.10", 5000, "10.96.0.10", 53), ("10.1.1.20", 53, "10.1.0.10", 5000))
    assert rows(label(cluster(ALL), row))["out"]["proto"] == "UDP"
    ignoring = LabelSettings(cloud="aws", region="us-west-2", ignore_udp=True)
    assert label(cluster(ALL), row, settings=ignoring) == "udp"


def test_sctp_is_labelled_and_other_protocols_dropped() -> None:
    row = raw_row("sctp", ("10.1.0.10", 5000, "10.1.1.20", 36412), ("10.1.1.20", 36412, "10.1.0.10", 5000))
    assert rows(label(cluster(ALL), row))["out"]["proto"] == "SCTP"
    assert label(cluster(ALL), row._replace(proto=1)) == "proto"


def test_udp_drop_comes_before_node_drop() -> None:
    ignoring = LabelSettings(cloud="aws", region="us-west-2", ignore_udp=True)
    row = raw_row("udp", ("192.168.0.1", 5, "10.1.0.10", 53), ("10.1.0.10", 53, "192.168.0.1", 5))
    assert label(cluster(ALL), row, settings=ignoring) == "udp"


def test_stats_count_every_drop_and_unknown() -> None:
    index = cluster(ALL)
    labeler = Labeler(AWS, index=index, ranges=TABLE)
    batch = [
        raw_row("tcp", ("192.168.0.2", 5, "10.1.0.10", 80), ("10.1.0.10", 80, "192.168.0.2", 5)),  # node
        raw_row("tcp", ("10.9.0.1", 5, "10.9.0.2", 80), ("10.9.0.2", 80, "10.9.0.1", 5)),  # direction
        raw_row("tcp", ("10.1.0.10", 5, "1.2.3.4", 80), ("1.2.3.4", 80, "192.168.0.1", 5)),  # remote unknown
        raw_row("tcp", ("10.9.9.9", 7, "10.1.1.20", 80), ("10.1.1.20", 80, "10.9.9.9", 7)),  # local unknown
        raw_row("tcp", ("10.1.0.10", 5, "54.239.0.1", 80), ("54.239.0.1", 80, "192.168.0.1", 5)),  # class
        raw_row(1, ("10.1.0.10", 0, "10.1.1.20", 0), ("10.1.1.20", 0, "10.1.0.10", 0)),  # proto
    ]
    result = labeler.label(message(batch), enriched_at=1)
    assert result.stats.records == 6 and result.stats.rows == 6
    assert result.stats.dropped == {"node": 1, "direction": 1, "proto": 1}
    assert result.stats.unknown == {"remote": 2, "local": 1, "class": 1}


# ------------------------------------------------------------------------------- attributes


def test_pod_attributes_app_workload_node_zone_instance() -> None:
    index = cluster(ALL)
    expected = {
        "10.1.0.10": ("web", "Deployment", "web", "i-0n1"),  # app.kubernetes.io/name wins; RS -> Deployment
        "10.1.1.20": ("api", "StatefulSet", "api", "i-0n2"),  # k8s-app
        "10.1.0.30": ("db", "StatefulSet", "db", "i-0n1"),  # app
        "10.1.0.40": ("backup", "CronJob", "backup", "i-0n1"),  # workload name; Job -> CronJob
        "10.1.2.5": ("cache", "DaemonSet", "cache", "i-0n3"),
    }
    for ip, (app, kind, workload, instance) in expected.items():
        row = raw_row("tcp", ("10.9.9.9", 1, ip, 80), (ip, 80, "10.9.9.9", 1))
        if ip.startswith("10.1.0."):  # on the observer: local
            out = rows(label(index, row))["out"]
            got = (out["localApp"], out["localWorkloadKind"], out["localWorkload"], out["localInstanceID"])
            assert out["localNode"] == "n1" and out["localNamespace"] == "default"
        else:
            out = rows(label(index, row))["out"]
            got = (
                out["remoteApp"],
                out["remoteWorkloadKind"],
                out["remoteWorkload"],
                out["remoteInstanceID"],
            )
        assert got == (app, kind, workload, instance), ip


def test_bare_replicaset_and_manual_job_keep_their_own_kind() -> None:
    bare = pod("x", "10.1.0.50", node=N, owner=("ReplicaSet", "handmade"))
    job = pod("y", "10.1.0.51", node=N, owner=("Job", "migrate-v2"))
    index = cluster([bare, job])
    for ip, kind, name in (("10.1.0.50", "ReplicaSet", "handmade"), ("10.1.0.51", "Job", "migrate-v2")):
        out = rows(label(index, raw_row("tcp", (ip, 1, "10.9.9.9", 2), ("10.9.9.9", 2, ip, 1))))["out"]
        assert (out["localWorkloadKind"], out["localWorkload"], out["localApp"]) == (kind, name, name)


def test_configured_and_unknown_remote_cluster_and_cell() -> None:
    index = cluster(ALL)
    known = rows(
        label(index, raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1)))
    )
    out = known["out"]
    assert (out["localCluster"], out["localCell"], out["remoteCluster"], out["remoteCell"]) == (
        "prod-1",
        "c1",
        "prod-1",
        "c1",
    )
    assert (out["environment"], out["localCloud"], out["localRegion"]) == ("production", "aws", "us-west-2")
    stranger = rows(
        label(index, raw_row("tcp", ("10.1.0.10", 1, "10.7.0.1", 2), ("10.7.0.1", 2, "10.1.0.10", 1)))
    )
    out = stranger["out"]
    assert (out["remoteCluster"], out["remoteCell"], out["connectionClass"]) == (
        "UNKNOWN",
        "UNKNOWN",
        "INTRA_VPC",
    )
    peered = rows(
        label(index, raw_row("tcp", ("10.1.0.10", 1, "172.20.0.9", 2), ("172.20.0.9", 2, "10.1.0.10", 1)))
    )
    out = peered["out"]
    assert (out["remoteCluster"], out["remoteRegion"], out["connectionClass"]) == (
        "peer-cluster",
        "us-east-1",
        "INTER_REGION",
    )


def test_cross_zone_flag() -> None:
    index = cluster(ALL)
    same = rows(
        label(index, raw_row("tcp", ("10.1.0.10", 1, "10.1.2.5", 2), ("10.1.2.5", 2, "10.1.0.10", 1)))
    )
    assert same["out"]["crossZone"] is False and same["out"]["remoteAvailabilityZone"] == "us-west-2a"
    user_zone = rows(
        label(
            index, raw_row("tcp", ("10.1.0.10", 1, "10.16.1.16", 6379), ("10.16.1.16", 6379, "10.1.0.10", 1))
        )
    )
    out = user_zone["out"]
    assert (out["remoteAvailabilityZone"], out["crossZone"], out["remoteCloudService"]) == (
        "us-west-2b",
        True,
        "redis",
    )
    assert out["connectionClass"] == "INTRA_VPC"


# ----------------------------------------------------------------------------------- classes


@pytest.mark.parametrize(
    ("remote", "cls", "cloud", "service"),
    [
        ("10.200.0.1", "INTRA_VPC", "aws", ""),
        ("100.64.0.1", "INTRA_VPC", "aws", ""),  # CGNAT [ours]
        ("169.254.169.254", "INTRA_VPC", "aws", ""),  # link-local
        ("198.18.0.1", "INTRA_VPC", "aws", ""),  # a configured private CIDR
        ("13.34.1.1", "INTRA_REGION", "aws", "amazon"),
        ("13.244.1.1", "INTER_REGION", "aws", "ec2"),
        ("20.60.1.1", "PUBLIC_INTERNET", "azure", "azurestorage"),
        ("203.0.113.1", "PUBLIC_INTERNET", "", ""),
        ("54.239.0.1", "UNKNOWN", "aws", "amazon"),  # same cloud, empty region [ours: not dropped]
        ("13.34.66.1", "PUBLIC_INTERNET", "other", "partner"),  # user entry over the provider's
    ],
)
def test_each_connection_class(remote: str, cls: str, cloud: str, service: str) -> None:
    settings = LabelSettings(
        cloud="aws", region="us-west-2", cluster="prod-1", private_cidrs=("198.18.0.0/15",)
    )
    out = rows(
        label(
            cluster(ALL),
            raw_row("tcp", ("10.1.0.10", 1, remote, 443), (remote, 443, "192.168.0.1", 1)),
            settings=settings,
            ranges_table=table(settings),
        )
    )["out"]
    assert (out["connectionClass"], out["remoteCloud"], out["remoteCloudService"]) == (cls, cloud, service)


def test_local_cloud_other_makes_every_provider_public() -> None:
    other = LabelSettings(cloud="other", region="dc1")
    out = rows(
        label(
            cluster(ALL),
            raw_row("tcp", ("10.1.0.10", 1, "13.34.1.1", 2), ("13.34.1.1", 2, "10.1.0.10", 1)),
            settings=other,
        )
    )["out"]
    assert (out["connectionClass"], out["remoteCloud"]) == ("PUBLIC_INTERNET", "aws")


# ------------------------------------------------------------------------------------- IPv6


def test_ipv6_pod_to_pod_and_egress() -> None:
    index = cluster(ALL)
    out = rows(
        label(index, raw_row("tcp", ("fd00::10", 1, "fd00::20", 80), ("fd00::20", 80, "fd00::10", 1)))
    )["out"]
    assert (out["ipFamily"], out["localIPv4"], out["remoteIPv4"]) == (6, 0, 0)
    assert out["localIP"] == bytes.fromhex("fd000000000000000000000000000010")
    assert (out["localPod"], out["remotePod"], out["connectionClass"]) == (
        "web-5d8f7-abcde",
        "api-0",
        "INTRA_VPC",
    )
    s3 = "2600:1f14:4000::5"
    out = rows(label(index, raw_row("tcp", ("fd00::10", 1, s3, 443), (s3, 443, "fd00::10", 1))))["out"]
    assert (out["connectionClass"], out["remoteCloudService"], out["remoteRegion"]) == (
        "INTRA_REGION",
        "s3",
        "us-west-2",
    )
    db = "fd00:10::7"
    out = rows(label(index, raw_row("tcp", ("fd00::10", 1, "fd00:96::1", 5432), (db, 5432, "fd00::10", 1))))[
        "out"
    ]
    assert (out["remoteCloudService"], out["remoteAvailabilityZone"], out["crossZone"]) == (
        "db",
        "us-west-2c",
        True,
    )
    assert out["remoteService"] == "default/v6db"


def test_ipv4_addresses_are_mapped_into_the_16_byte_columns() -> None:
    out = rows(
        label(
            cluster(ALL), raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1))
        )
    )["out"]
    assert out["localIP"] == MAPPED + bytes([10, 1, 0, 10]) and out["remoteIP"] == MAPPED + bytes(
        [10, 1, 1, 20]
    )
    assert out["ipFamily"] == 4


# ----------------------------------------------------------------------------- time-awareness


def test_ip_reuse_resolves_by_interval_and_overlap_is_ambiguous() -> None:
    old = pod("old", "10.1.5.5", node="n2", uid="u-old", created=T0 - 3600)
    new = pod("new", "10.1.5.5", node="n3", uid="u-new", created=T0 + 100)
    index = cluster([WEB])
    index.apply("pods", "ADDED", old, now=T0 - 3600)
    index.apply("pods", "DELETED", old, now=T0 + 30)
    index.apply("pods", "ADDED", new, now=T0 + 100)
    row = raw_row("tcp", ("10.1.0.10", 1, "10.1.5.5", 2), ("10.1.5.5", 2, "10.1.0.10", 1))
    assert rows(label(index, row, start=T0))["out"]["remotePod"] == "old"
    assert rows(label(index, row, start=T0 + 120))["out"]["remotePod"] == "new"
    assert rows(label(index, row, start=T0 + 90))["out"]["remotePod"] == "new"  # old only by grace
    labeler = Labeler(AWS, index=index, ranges=TABLE)
    result = labeler.label(message([row], start=T0 + 20, seconds=90), enriched_at=1)
    assert result.data[schema.COLUMN_INDEX["remotePod"]][0] == ""
    assert result.stats.unknown["ambiguous"] == 1


def test_deleted_pods_resolve_for_the_grace_period_only() -> None:
    gone = pod("gone", "10.1.6.6", node="n2", created=T0 - 7200)
    index = cluster([WEB, gone])
    index.apply("pods", "DELETED", gone, now=T0 - 100)
    row = raw_row("tcp", ("10.1.0.10", 1, "10.1.6.6", 2), ("10.1.6.6", 2, "10.1.0.10", 1))
    assert rows(label(index, row, start=T0))["out"]["remotePod"] == "gone"
    assert rows(label(index, row, start=T0 + 1000))["out"]["remotePod"] == ""
    index.prune(now=T0 + 1000)
    assert index.pod_at(bytes([10, 1, 6, 6]), T0 - 200, T0 - 140) is None  # memory released


def test_completed_pods_do_not_claim_their_ip() -> None:
    done = pod(
        "done", "10.1.7.7", node="n2", uid="u-done", phase="Succeeded", created=T0 - 7200, finished=T0 - 600
    )
    fresh = pod("fresh", "10.1.7.7", node="n3", uid="u-fresh", created=T0 - 300)
    index = cluster([WEB, done, fresh])
    row = raw_row("tcp", ("10.1.0.10", 1, "10.1.7.7", 2), ("10.1.7.7", 2, "10.1.0.10", 1))
    assert rows(label(index, row, start=T0))["out"]["remotePod"] == "fresh"
    assert rows(label(index, row, start=T0 - 1200))["out"]["remotePod"] == "done"  # before it completed
    assert index.ambiguous == 0


def test_a_pod_created_after_the_interval_does_not_claim_it() -> None:
    later = pod("later", "10.1.8.8", node="n2", created=T0 + 600)
    row = raw_row("tcp", ("10.1.0.10", 1, "10.1.8.8", 2), ("10.1.8.8", 2, "10.1.0.10", 1))
    assert rows(label(cluster([WEB, later]), row, start=T0))["out"]["remotePod"] == ""


# --------------------------------------------------------------------------- identity, wire


def test_flow_ids_match_the_schema_for_both_families_and_directions() -> None:
    ids = FlowIds("n1/boot/1/0/0")
    for row in (
        raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1), zone=7),
        raw_row("udp", ("fd00::10", 65535, "fd00::20", 0), ("fd00::20", 0, "fd00::10", 65535)),
    ):
        assert ids.of(row) == (
            schema.flow_id("n1/boot/1/0/0", row, "out"),
            schema.flow_id("n1/boot/1/0/0", row, "in"),
        )


def test_rows_carry_identity_version_and_source_and_survive_the_wire() -> None:
    index = cluster(ALL)
    batch = [
        raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1)),
        raw_row("udp", ("fd00::10", 1, "2001:4860::8888", 53), ("2001:4860::8888", 53, "fd00::10", 1)),
    ]
    msg = message(batch)
    result = Labeler(AWS, index=index, ranges=TABLE).label(msg, enriched_at=42)
    col = {c: v for c, v in zip(result.columns, result.data, strict=True)}
    assert col["direction"] == ["out", "out", "in", "in"]
    assert col["flowId"][0] == schema.flow_id(msg.msg_id, batch[0], "out")
    assert col["flowId"][2] == schema.flow_id(msg.msg_id, batch[0], "in")
    assert len(set(col["flowId"])) == 4
    assert set(col["sourceId"]) == {msg.msg_id} and set(col["enrichedAt"]) == {42}
    assert set(col["observerNode"]) == {"n1"} and set(col["intervalStartTime"]) == {T0}
    enriched = schema.EnrichedMessage(msg.msg_id, msg.node, 42, result.columns, result.data)
    decoded = schema.decode_enriched(schema.encode_enriched(enriched))
    assert decoded.data == result.data


def test_an_empty_message_gives_empty_columns() -> None:
    result = Labeler(AWS, index=cluster(ALL), ranges=TABLE).label(message([]), enriched_at=1)
    assert result.columns == list(schema.COLUMN_NAMES) and all(c == [] for c in result.data)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        LabelSettings(cloud="oracle")
    with pytest.raises(ConfigError):
        LabelSettings(cloud="aws", private_cidrs=("10.0.0.0/40",))
    assert LabelSettings(cloud="AWS", region="US West 2").region == "uswest2"
    with pytest.raises(ConfigError):
        Labeler(AWS, index=Index(), ranges=ranges.build_table({}, private=()))


def test_memoised_endpoints_follow_pod_node_and_range_changes() -> None:
    index = cluster(ALL)
    labeler = Labeler(AWS, index=index, ranges=TABLE)
    row = raw_row("tcp", ("10.1.0.10", 1, "10.1.1.20", 2), ("10.1.1.20", 2, "10.1.0.10", 1))

    def out() -> dict[str, Any]:
        result = labeler.label(message([row]), enriched_at=1)
        return {c: v[0] for c, v in zip(result.columns, result.data, strict=True)}

    assert (out()["remoteApp"], out()["remoteAvailabilityZone"]) == ("api", "us-west-2b")
    index.apply("pods", "MODIFIED", pod("api-0", ["10.1.1.20"], node="n2", labels={"app": "api-v2"}), now=T0)
    assert out()["remoteApp"] == "api-v2"
    index.apply("nodes", "MODIFIED", node("n2", "192.168.0.2", zone="us-west-2c"), now=T0)
    assert out()["remoteAvailabilityZone"] == "us-west-2c"
    stranger = raw_row("tcp", ("10.1.0.10", 1, "13.34.1.1", 2), ("13.34.1.1", 2, "10.1.0.10", 1))
    assert (
        labeler.label(message([stranger]), enriched_at=1).data[schema.COLUMN_INDEX["connectionClass"]][0]
        == "INTRA_REGION"
    )
    labeler.set_ranges(ranges.build_table({}, private=AWS.private))
    assert (
        labeler.label(message([stranger]), enriched_at=1).data[schema.COLUMN_INDEX["connectionClass"]][0]
        == "PUBLIC_INTERNET"
    )
