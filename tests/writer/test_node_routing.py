"""The writer routes node rows (``localKind`` 'node') to the node table and pod rows to the flows table,
in one batch, through splits, and byte for byte through the ENRICHED codec."""

from __future__ import annotations

from kubenetmon.shared.schema import COLUMN_NAMES, decode_enriched, encode_enriched
from kubenetmon.writer.batcher import Batch
from kubenetmon.writer.insert import insert_batch
from kubenetmon.writer.sink import Sink
from tests.support.messages import message, row

NODE_COLUMNS = [*COLUMN_NAMES, "localKind"]


def _node_message(source: str, count: int) -> object:
    rows = [row(source, i, localPod="", localKind="node", localNode="node-a") for i in range(count)]
    return decode_enriched(encode_enriched(message(source, rows, columns=NODE_COLUMNS)))


def _counts(sink: Sink) -> tuple[tuple[int, int], tuple[int, int, str]]:
    pods = sink.query("SELECT count(), sum(bytes) FROM kubenetmon.network_flows_0_exact").rows[0]
    nodes = sink.query(
        "SELECT count(), sum(bytes), any(localKind) FROM kubenetmon.network_flows_0_node_exact"
    ).rows[0]
    return (int(pods[0]), int(pods[1])), (int(nodes[0]), int(nodes[1]), str(nodes[2]))


def test_a_mixed_batch_lands_in_both_tables_and_splits_keep_each_rows_kind(clickhouse: Sink) -> None:
    pods = decode_enriched(encode_enriched(message("n/b/1/0/0", [row("n/b/1/0/0", i) for i in range(3)])))
    nodes = _node_message("n/b/1/0/1", 4)
    more = decode_enriched(encode_enriched(message("n/b/1/0/2", [row("n/b/1/0/2", i) for i in range(2)])))
    batch: Batch[int] = Batch(opened_at=0.0)
    for k, msg in enumerate((pods, nodes, more)):
        batch.add(msg, k)  # type: ignore[arg-type]
    assert batch.kinds == [""] * 3 + ["node"] * 4 + [""] * 2
    left, right = batch.split()
    assert (left.kinds, right.kinds) == ([""] * 3, ["node"] * 4 + [""] * 2)
    insert_batch(clickhouse, left, [])
    insert_batch(clickhouse, right, [])
    assert _counts(clickhouse) == ((5, 1000 + 1001 + 1002 + 1000 + 1001), (4, 4006, "node"))
    insert_batch(clickhouse, batch, [])  # a redelivery of everything replaces, never adds
    assert _counts(clickhouse) == ((5, 5004), (4, 4006, "node"))
