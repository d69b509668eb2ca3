"""The state directory: round trips, atomic replacement, malformed files moved aside, orphans swept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kubenetmon.agent import reports
from kubenetmon.agent.checkpoint import STATE_FILE, State, StateDir
from kubenetmon.shared.schema import RawRow


def sample(n: int = 40_000) -> State:
    return State(
        node="n1",
        boot="boot-1",
        next_seq=12,
        interval_start=1_800_000_000,
        pending=[10, 11],
        last={i.to_bytes(60, "big"): (i * 7).to_bytes(56, "big") for i in range(n)},
        missing=[{b"gone-1": b"c" * 56}, {}, {b"gone-3": b"d" * 56}],
        destroyed=[{b"x", b"y"}, set()],
        deltas={i.to_bytes(60, "big"): (2**255 + i) for i in range(0, n, 3)},
    )


def test_round_trip(tmp_path: Path) -> None:
    store = StateDir(tmp_path)
    assert store.load(node="n1") is None
    state = sample()
    store.save(state)
    assert store.load(node="n1") == state
    state.pending = [11]
    state.last.clear()
    store.save(state)
    assert store.load(node="n1") == state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", STATE_FILE]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"",
        lambda b: b"garbage, not msgpack at all",
        lambda b: b[: len(b) // 2],
        lambda b: b[:-5],
        lambda b: b"\x81\xa6format\x63" + b[20:],
    ],
)
def test_malformed_state_is_moved_aside(
    tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateDir(tmp_path)
    store.save(sample(100))
    path = tmp_path / STATE_FILE
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with caplog.at_level(logging.ERROR):
        assert store.load(node="n1") is None
    assert not path.exists() and len(list(tmp_path.glob(f"{STATE_FILE}.bad-*"))) == 1
    assert "starting fresh" in caplog.text
    store.save(sample(10))
    assert store.load(node="n1") == sample(10)


def test_state_of_another_node_is_moved_aside(tmp_path: Path) -> None:
    store = StateDir(tmp_path)
    store.save(sample(10))
    assert store.load(node="n2") is None
    assert list(tmp_path.glob(f"{STATE_FILE}.bad-*"))


def test_reports_are_stored_and_orphans_swept(tmp_path: Path) -> None:
    store = StateDir(tmp_path)
    row = RawRow(6, 2, 0, b"\1" * 4, b"\2" * 4, 1, 2, b"\2" * 4, b"\1" * 4, 2, 1, 1, 2, 3, 4)
    for seq in (3, 4, 5):
        store.save_report(
            reports.build([row], node="n1", boot="b", start=0, seconds=60, seq=seq, max_bytes=4096)
        )
    (tmp_path / "reports" / "6.msgpack.tmp").write_bytes(b"half")
    assert store.stored_reports() == [3, 4, 5]
    assert store.sweep([3, 5]) == [4]
    assert store.stored_reports() == [3, 5] and not list(tmp_path.rglob("*.tmp"))
    assert store.load_report(5).seq == 5 and reports.rows_of(store.load_report(3)) == [row]
    store.delete_report(5)
    store.delete_report(5)
    assert store.stored_reports() == [3]


def test_format_1_keys_get_creation_time_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubenetmon.agent import checkpoint
    from kubenetmon.agent.ctnetlink import INSTANCE, decode_key
    from tests.support.ctmsg import Entry

    new = Entry(ident=9).key()  # no creation time: 8 zero bytes before the id
    old = new[:-INSTANCE] + new[-4:]  # the same conntrack's key as format 1 wrote it
    state = State(node="n1", boot="b", last={old: b"c"}, missing=[{old: b"m"}], destroyed=[{old}])
    state.deltas = {old: 5}
    monkeypatch.setattr(checkpoint, "FORMAT", 1)
    StateDir(tmp_path).save(state)
    monkeypatch.undo()
    loaded = StateDir(tmp_path).load(node="n1")
    assert loaded is not None and decode_key(new).id == 9
    assert (loaded.last, loaded.missing, loaded.destroyed, loaded.deltas) == (
        {new: b"c"},
        [{new: b"m"}],
        [{new}],
        {new: 5},
    )
    assert loaded.legacy_keys  # the delta table matches these baselines to keys with a creation time
