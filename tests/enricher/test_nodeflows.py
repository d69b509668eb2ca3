"""Node rows: the observer's own node's flows become rows of the node table, labelled like a pod's."""

from __future__ import annotations

import dataclasses
from typing import Any

from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import Enricher
from kubenetmon.shared import schema
from kubenetmon.shared.schema import RawMessage
from tests.enricher.test_labeler import ALL, AWS, MAPPED, TABLE, cluster
from tests.support.builders import T0, message, pod, raw_row

NODE_UID_POD = pod("ingress-7", "192.168.0.1", node="n1", host_network=True, owner=("DaemonSet", "ingress"))


def node_rows(msg: RawMessage, *, pods: list[dict[str, Any]] = ALL, **settings: Any) -> list[dict[str, Any]]:
    labeler = Labeler(dataclasses.replace(AWS, **settings), index=cluster(pods), ranges=TABLE)
    result = labeler.label(msg, enriched_at=123)
    if result.nodes is None:
        return []
    names, data = result.nodes
    assert result.stats.node_rows == len(data[0])
    return [dict(zip(names, values, strict=True)) for values in zip(*data, strict=True)]


def test_the_node_opening_a_connection_to_the_internet_is_an_out_and_in_node_row() -> None:
    row = raw_row("tcp", ("192.168.0.1", 40000, "8.8.8.8", 443), ("8.8.8.8", 443, "192.168.0.1", 40000))
    out, back = node_rows(message([row]))
    assert (out["direction"], out["bytes"], out["packets"]) == ("out", 11, 10)
    assert (back["direction"], back["bytes"], back["packets"]) == ("in", 13, 12)
    assert out["localKind"] == "node" and out["localNode"] == "n1" and out["localPod"] == ""
    assert out["localAvailabilityZone"] == "us-west-2a" and out["localInstanceID"] == "i-0n1"
    assert out["localIP"] == MAPPED + bytes([192, 168, 0, 1]) and out["localPort"] == 40000
    assert out["remotePort"] == 443 and out["connectionClass"] == "PUBLIC_INTERNET"
    assert back["flowId"] == out["flowId"] ^ schema.IN_FLIP


def test_a_connection_to_the_node_from_a_remote_node_is_labelled_from_the_responders_side() -> None:
    row = raw_row(
        "tcp", ("192.168.0.2", 5000, "192.168.0.1", 10250), ("192.168.0.1", 10250, "192.168.0.2", 5000)
    )
    out, back = node_rows(message([row]))
    assert (out["bytes"], back["bytes"]) == (13, 11)  # the node sent the reply direction
    assert out["localPort"] == 10250 and out["remotePort"] == 5000
    assert out["remoteNode"] == "n2" and out["remoteAvailabilityZone"] == "us-west-2b"
    assert out["remoteInstanceID"] == "i-0n2" and out["crossZone"] is True
    assert out["connectionFlags"] == {"crossZone": True} and out["connectionClass"] == "INTRA_VPC"


def test_the_node_to_a_pod_on_another_node_names_the_pod() -> None:
    row = raw_row("tcp", ("192.168.0.1", 5000, "10.1.1.20", 80), ("10.1.1.20", 80, "192.168.0.1", 5000))
    (out, _) = node_rows(message([row]))
    assert out["remotePod"] == "api-0" and out["remoteNode"] == "n2" and out["remoteApp"] == "api"


def test_node_rows_leave_the_pod_rows_as_they_were() -> None:
    pod_row = raw_row("tcp", ("10.1.0.10", 5, "10.1.1.20", 80), ("10.1.1.20", 80, "10.1.0.10", 5))
    node_row = raw_row("udp", ("192.168.0.1", 1, "8.8.8.8", 53), ("8.8.8.8", 53, "192.168.0.1", 1))
    labeler = Labeler(AWS, index=cluster(ALL), ranges=TABLE)
    both = labeler.label(message([pod_row, node_row]), enriched_at=1)
    alone = Labeler(AWS, index=cluster(ALL), ranges=TABLE).label(message([pod_row]), enriched_at=1)
    assert both.columns == alone.columns and [list(c) for c in both.data] == [list(c) for c in alone.data]
    assert both.stats.dropped == {} and both.stats.rows == 2 and both.stats.node_rows == 2


def test_drop_node_flows_restores_the_drop() -> None:
    row = raw_row("tcp", ("192.168.0.1", 40000, "8.8.8.8", 443), ("8.8.8.8", 443, "192.168.0.1", 40000))
    labeler = Labeler(dataclasses.replace(AWS, node_flows=False), index=cluster(ALL), ranges=TABLE)
    result = labeler.label(message([row]), enriched_at=1)
    assert result.nodes is None and result.stats.dropped == {"node": 1}


def test_the_socket_owner_names_the_hostnetwork_pod() -> None:
    row = raw_row("tcp", ("192.168.0.1", 40000, "8.8.8.8", 443), ("8.8.8.8", 443, "192.168.0.1", 40000))
    index = cluster([*ALL, NODE_UID_POD])
    uid = next(p.uid for p in index.pods.values() if p.name == "ingress-7")
    msg = message([row])
    owned = RawMessage(
        msg.node, msg.boot, msg.start, msg.seconds, msg.seq, 0, 1, rows=msg.rows, owners={0: uid}
    )
    names, data = Labeler(AWS, index=index, ranges=TABLE).label(owned, enriched_at=1).nodes or ([], [])
    out = dict(zip(names, (c[0] for c in data), strict=True))
    assert (out["localPod"], out["localNamespace"], out["localWorkloadKind"]) == (
        "ingress-7",
        "default",
        "DaemonSet",
    )
    assert out["localKind"] == "node" and out["localNode"] == "n1"


def test_an_unknown_owner_uid_leaves_the_pod_empty() -> None:
    row = raw_row("tcp", ("192.168.0.1", 40000, "8.8.8.8", 443), ("8.8.8.8", 443, "192.168.0.1", 40000))
    msg = message([row])
    owned = RawMessage(msg.node, msg.boot, T0, 60, 0, 0, 1, rows=msg.rows, owners={0: "no-such-uid"})
    (out, _) = node_rows(owned)
    assert out["localPod"] == "" and out["localKind"] == "node"


def test_the_enricher_publishes_node_rows_in_their_own_parts_which_decode() -> None:
    rows = [
        raw_row("tcp", ("192.168.0.1", p, "8.8.8.8", 443), ("8.8.8.8", 443, "192.168.0.1", p))
        for p in range(5)
    ]
    enricher = Enricher(Labeler(AWS, index=cluster(ALL), ranges=TABLE), broker=_Subjects(), max_rows=4)
    out = enricher.enrich_message(message(rows))
    ids = [msg_id for _, _, msg_id in out]
    assert ids == [f"enriched/n1/boot-1/{T0}/0/0{s}" for s in ("+node0", "+node1", "+node2")]
    decoded = [schema.decode_enriched(payload) for _, payload, _ in out]
    assert sum(m.row_count for m in decoded) == 10
    assert all(m.columns[-1] == "localKind" and set(m.data[-1]) == {"node"} for m in decoded)


class _Subjects:
    max_payload = 1 << 20

    def enriched_subject(self, node: str) -> str:
        return f"kubenetmon.enriched.{node}"
