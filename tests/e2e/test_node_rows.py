"""The node's own traffic against the real kernel: a process in the node's namespace (a hostNetwork socket)
sends known bytes to a remote node and to the internet; the agent's RAW, labelled and written as the
pipeline does, lands in the node table exactly (the kernel's counters), attributed to the node, while the
flows table keeps only the pod's flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli.lab.objects import node as node_object
from kubenetmon.cli.lab.objects import pod as pod_object
from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared.schema import decode_enriched
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.flow_tables import exact_view, node_table
from kubenetmon.writer.insert import insert_batch
from kubenetmon.writer.sink import Sink
from tests.fixtures.lab import Lab
from tests.support.agent_lab import Probe
from tests.support.builders import T0

pytestmark = pytest.mark.netns


class _Subjects:
    max_payload = 1 << 20

    def enriched_subject(self, node: str) -> str:
        return f"kubenetmon.enriched.{node}"


def _write(probe: Probe, index: Index, sink: Sink) -> None:
    """Label the agent's reports and write them as the enricher and the writer would."""
    settings = LabelSettings(cloud="aws", region="us-east-1", cluster="lab")
    table = sources.load_table(sources.RangeSettings(), private=settings.private)
    enricher = Enricher(Labeler(settings, index=index, ranges=table), broker=_Subjects(), max_rows=1000)  # type: ignore[arg-type]
    batch: Batch[int] = Batch(opened_at=0.0)
    for raw in probe.messages():
        for _, payload, _ in enricher.enrich_message(raw):
            batch.add(decode_enriched(payload), 0)
    insert_batch(sink, batch, batch.report_columns())


def test_the_nodes_own_traffic_is_stored_exactly_as_node_rows(
    lab: Lab, tmp_path: Path, clickhouse: Sink
) -> None:
    n1, n2 = lab.node("n1", zone="az-a"), lab.node("n2", zone="az-b")
    pod = lab.pod("web", node=n1)
    internet = lab.external("internet", ipv4="203.0.113.7", ipv6="2001:db8::7")
    probe = Probe(n1, tmp_path / "state")
    try:
        to_node = n1.tcp_connect(n2.server("tcp"))  # the node's own socket (hostNetwork)
        to_node.exchange(120_000, 1_300_000)
        node_flow = to_node.close()
        to_internet = n1.tcp_connect(internet.server("tcp"))
        to_internet.exchange(70_000, 900_000)
        internet_flow = to_internet.close()
        from_pod = pod.tcp_connect(internet.server("tcp"))
        from_pod.exchange(10_000, 50_000)
        pod_flow = from_pod.close()
        probe.cut()
        kernel = {f.dport: n1.find(f).counters for f in (node_flow, internet_flow, pod_flow)}
    finally:
        probe.close()
    index = Index()
    index.replace(
        "nodes", [node_object("n1", n1.ipv4, zone="az-a"), node_object("n2", n2.ipv4, zone="az-b")], now=T0
    )
    index.replace("pods", [pod_object("web", pod.ipv4, node="n1", labels={"app": "web"})], now=0.0)
    index.replace("services", [], now=T0)
    _write(probe, index, clickhouse)

    rows = _query(
        clickhouse,
        "SELECT remotePort, direction, sum(bytes), sum(packets), any(localKind), any(localNode), "
        "any(localAvailabilityZone), any(remoteNode), any(remoteAvailabilityZone), any(connectionClass), "
        "any(crossZone), any(localPod) "
        f"FROM kubenetmon.{exact_view(node_table('network_flows_0'))} GROUP BY remotePort, direction",
    )
    got = {(r[0], r[1]): r[2:] for r in rows}
    for flow, remote, zone, cls, cross in (
        (node_flow, "n2", "az-b", "INTRA_VPC", True),
        (internet_flow, "", "", "PUBLIC_INTERNET", False),
    ):
        pk_out, by_out, pk_in, by_in = kernel[flow.dport]
        assert by_out >= flow.sent and by_in >= flow.received  # payload plus headers, as conntrack counts
        labels = ("node", "n1", "az-a", remote, zone, cls, cross, "")
        assert got[(flow.dport, "out")] == (by_out, pk_out, *labels)
        assert got[(flow.dport, "in")] == (by_in, pk_in, *labels)
    assert len(got) == 4
    # the flows table holds the pod's flow alone, exactly as before
    pods = _query(
        clickhouse,
        "SELECT localPod, remotePort, direction, sum(bytes) FROM kubenetmon.network_flows_0_exact "
        "GROUP BY localPod, remotePort, direction ORDER BY direction",
    )
    _, by_out, _, by_in = kernel[pod_flow.dport]
    assert pods == [("web", pod_flow.dport, "out", by_out), ("web", pod_flow.dport, "in", by_in)]


def _query(sink: Sink, sql: str) -> list[tuple[Any, ...]]:
    return sink.query(sql).rows
