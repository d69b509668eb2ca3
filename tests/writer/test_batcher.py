"""The batcher: column order, defaults, ownership of rows, splitting, and when a batch is due."""

from __future__ import annotations

import pytest

from kubenetmon.shared.schema import COLUMN_INDEX, COLUMN_NAMES
from kubenetmon.writer.batcher import Batch, Batcher
from tests.support.messages import message, messages, row


def _column(batch: Batch[str], name: str) -> list[object]:
    return batch.columns[COLUMN_INDEX[name]]


def test_columns_are_reordered_to_the_table_order() -> None:
    src = "n/b/1/0/0"
    rows = [row(src, i) for i in range(3)]
    shuffled = list(reversed(COLUMN_NAMES))
    batch: Batch[str] = Batch(opened_at=0.0)
    batch.add(message(src, rows, columns=shuffled), "m1")
    assert batch.rows == 3
    for name in COLUMN_NAMES:
        assert _column(batch, name) == [r[name] for r in rows], name


def test_missing_columns_get_zero_values() -> None:
    src = "n/b/1/0/0"
    rows = [row(src, i, localWorkload="web") for i in range(2)]
    present = [
        c for c in COLUMN_NAMES if c not in ("localWorkload", "connectionFlags", "localIP", "crossZone")
    ]
    batch: Batch[str] = Batch(opened_at=0.0)
    batch.add(message(src, rows, columns=present), "m1")
    assert _column(batch, "localWorkload") == ["", ""]
    assert _column(batch, "connectionFlags") == [{}, {}]
    assert _column(batch, "localIP") == [bytes(16), bytes(16)]
    assert _column(batch, "crossZone") == [False, False]
    assert _column(batch, "bytes") == [r["bytes"] for r in rows]
    assert all(len(col) == 2 for col in batch.columns)


def test_parts_own_contiguous_row_ranges_and_split_keeps_them() -> None:
    msgs = messages(5, 3)
    msgs.insert(2, message("n/b/1/0/empty", []))
    batch: Batch[str] = Batch(opened_at=7.0)
    for i, msg in enumerate(msgs):
        batch.add(msg, f"m{i}", size=10 * (i + 1))
    assert batch.rows == 15 and batch.messages == 6 and batch.size == 210
    assert [(p.start, p.stop) for p in batch.parts] == [(0, 3), (3, 6), (6, 6), (6, 9), (9, 12), (12, 15)]
    left, right = batch.split()
    assert left.owners == ["m0", "m1", "m2"] and right.owners == ["m3", "m4", "m5"]
    assert left.rows + right.rows == batch.rows and left.opened_at == right.opened_at == 7.0
    assert left.size + right.size == batch.size
    assert [(p.start, p.stop) for p in right.parts] == [(0, 3), (3, 6), (6, 9)]
    for name in COLUMN_NAMES:
        assert _column(left, name) + _column(right, name) == _column(batch, name)
    assert right.flow_bytes() == sum(_column(right, "bytes"))  # type: ignore[arg-type]


def test_bisection_isolates_one_message() -> None:
    msgs = messages(9, 2)
    batch: Batch[int] = Batch(opened_at=0.0)
    for i, msg in enumerate(msgs):
        batch.add(msg, i)
    bad, work, written, splits = 6, [batch], [], 0
    while work:
        part = work.pop()
        if bad not in part.owners:
            written += part.owners
        elif part.messages == 1:
            assert part.owners == [bad]
        else:
            splits += 1
            work += reversed(part.split())
    assert sorted(written) == [i for i in range(9) if i != bad]
    assert splits <= 4  # about log2(9)


def test_pod_and_node_rows_fill_their_own_columns_and_every_split_keeps_them() -> None:
    """A node message (``localKind``) lands in the node columns, in the node table's order, whatever
    its column order; pod messages around it in the pod columns; any cut of the parts slices both."""
    node_names = [*COLUMN_NAMES, "localKind"]
    msgs = []
    for k in range(7):
        src = f"n/b/1/0/{k}"
        if k % 3 == 1:
            rows = [row(src, i, localKind="node", localPod="") for i in range(k + 1)]
            names = list(reversed(node_names)) if k == 4 else node_names
            msgs.append((message(src, rows, columns=names), rows))
        else:
            rows = [row(src, i) for i in range(k)]
            msgs.append((message(src, rows), rows))
    batch: Batch[int] = Batch(opened_at=0.0)
    for k, (msg, _) in enumerate(msgs):
        batch.add(msg, k)
    pods = [r for k, (_, rows) in enumerate(msgs) if k % 3 != 1 for r in rows]
    nodes = [r for k, (_, rows) in enumerate(msgs) if k % 3 == 1 for r in rows]
    assert [len(c) for c in batch.columns] == [len(pods)] * len(COLUMN_NAMES)
    assert batch.nodes == [[r[n] for r in nodes] for n in node_names]
    assert batch.rows == len(pods) + len(nodes) == len(batch.kinds)

    def rows_of(b: Batch[int]) -> tuple[list[list[object]], list[list[object]]]:
        return b.columns, b.nodes

    work = [batch]
    seen_pods: list[list[object]] = [[] for _ in COLUMN_NAMES]
    seen_nodes: list[list[object]] = [[] for _ in node_names]
    while work:  # split down to single messages, left first: the rows come back in order
        part = work.pop()
        if part.messages > 1:
            work += reversed(part.split())
            continue
        p = part.parts[0]
        assert (p.start, p.rows) == (0, part.rows) and p.owner is not None
        cols, node_cols = rows_of(part)
        for acc, got in zip(seen_pods, cols, strict=True):
            acc += got
        for acc, got in zip(seen_nodes, node_cols, strict=True):
            acc += got
        assert sum(len(c[0]) for c in (cols, node_cols)) == part.rows
    assert seen_pods == batch.columns and seen_nodes == batch.nodes


def test_a_single_message_cannot_be_split() -> None:
    batch: Batch[str] = Batch(opened_at=0.0)
    batch.add(messages(1, 4)[0], "only")
    with pytest.raises(ValueError):
        batch.split()


def test_batcher_is_due_by_rows_or_by_age() -> None:
    b: Batcher[str] = Batcher(max_rows=10, max_age=2.0)
    assert not b.due(now=0.0) and b.wait(now=0.0) is None and b.take() is None
    b.add(messages(1, 4)[0], "a", now=100.0)
    assert not b.due(now=101.0) and b.wait(now=101.0) == pytest.approx(1.0)
    assert b.due(now=102.0) and b.wait(now=103.0) == 0.0
    b.add(messages(1, 6, prefix="x")[0], "b", now=101.5)
    assert b.pending_rows == 10 and b.due(now=100.0) and b.wait(now=100.0) == 0.0
    batch = b.take()
    assert batch is not None and batch.owners == ["a", "b"] and batch.opened_at == 100.0
    assert b.current is None and b.pending_rows == 0
