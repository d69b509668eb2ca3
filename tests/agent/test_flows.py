"""The delta table against a model kernel: whatever the order of dumps, events and races, the deltas
of every conntrack sum to its final counters, exactly once."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from kubenetmon.agent import ctnetlink as ct
from kubenetmon.agent.flows import WITH_SCTP, FlowTable, fold, pack, report, unpack
from tests.support.ctmsg import Entry


def key(sport: int = 1000, ident: int = 1, **kw: object) -> bytes:
    return Entry(sport=sport, ident=ident, **kw).key()  # type: ignore[arg-type]


def blob(*values: int) -> bytes:
    return ct.counters_blob(*values)


def dump(table: FlowTable, entries: list[tuple[bytes, bytes]], *, consistent: bool = True) -> None:
    table.begin_dump()
    table.observe([k for k, _ in entries], [c for _, c in entries])
    table.end_dump(consistent=consistent)


def totals(deltas: dict[bytes, int]) -> dict[bytes, tuple[int, int, int, int]]:
    return {k: unpack(v) for k, v in deltas.items()}


def test_first_sighting_counts_everything_then_growth() -> None:
    t, k = FlowTable(), key()
    dump(t, [(k, blob(1, 100, 2, 200))])
    dump(t, [(k, blob(1, 100, 2, 200))])
    dump(t, [(k, blob(3, 150, 2, 260))])
    assert totals(t.take()) == {k: (3, 150, 2, 260)}
    dump(t, [(k, blob(4, 151, 2, 260))])
    assert totals(t.take()) == {k: (1, 1, 0, 0)}
    assert t.take() == {}


def test_destroy_event_adds_the_rest_and_forgets_the_flow() -> None:
    t, k = FlowTable(), key()
    dump(t, [(k, blob(1, 10, 1, 10))])
    t.destroy((k, blob(5, 50, 4, 40)))
    assert totals(t.take()) == {k: (5, 50, 4, 40)} and t.tracked == 0
    dump(t, [(k, blob(5, 50, 4, 40))])  # a dying entry still in the kernel's hash: a stale sighting
    assert t.take() == {} and t.stats["stale_sightings"] == 1
    t.destroy((k, blob(5, 50, 4, 40)))
    assert t.take() == {} and t.stats["duplicate_events"] == 1


def test_reused_conntrack_with_the_same_tuples_and_id_is_told_apart_by_its_creation_time() -> None:
    # the kernel's id hashes the object's address and tuples: a freed conntrack reallocated for the same
    # tuples (ephemeral port reused under churn) has the same id; only the creation time differs
    t = FlowTable()
    old, new = key(ident=7, start=1_000_000_000), key(ident=7, start=2_000_000_000)
    assert old != new and ct.row_key(old) == ct.row_key(new)
    dump(t, [(old, blob(1, 60, 1, 60))])
    t.destroy((old, blob(1, 60, 1, 80)))
    dump(t, [(new, blob(1, 70, 0, 0))])  # the new instance's sighting is not a stale one of the old
    t.destroy((new, blob(1, 70, 1, 90)))  # nor is its DESTROY a duplicate
    assert totals(fold(t.take())) == {ct.row_key(old): (2, 130, 2, 170)}
    assert t.stats["stale_sightings"] == t.stats["duplicate_events"] == 0


def test_baselines_saved_without_creation_times_are_matched_after_an_upgrade() -> None:
    # a state file of format 1 had no creation times: its keys are converted with NO_START, while the
    # kernel (nf_conntrack_timestamp already on) reports the real one; the past bytes are not counted again
    alive, closing = key(ident=1, start=5), key(sport=2000, ident=2, start=6)
    for adopt, expected in ((True, (1, 10, 1, 10)), (False, (11, 110, 11, 110))):
        t = FlowTable()
        dump(t, [(key(ident=1), blob(10, 100, 10, 100)), (key(sport=2000, ident=2), blob(5, 50, 5, 50))])
        t.take()
        if adopt:
            t.adopt_legacy_keys()
        dump(t, [(alive, blob(11, 110, 11, 110))])
        t.destroy((closing, blob(6, 60, 6, 60)))
        got = totals(t.take())
        assert got[alive] == expected
        assert got[closing] == ((1, 10, 1, 10) if adopt else (6, 60, 6, 60))
        assert t.stats["legacy_baselines"] == (2 if adopt else 0)


def test_flow_that_opened_and_closed_between_dumps_counts_via_its_event() -> None:
    t, k = FlowTable(), key()
    t.destroy((k, blob(3, 180, 2, 120)))
    assert totals(t.take()) == {k: (3, 180, 2, 120)} and t.stats["unseen_destroyed"] == 1


def test_same_tuple_new_conntrack_is_a_new_flow() -> None:
    t, old, new = FlowTable(), key(ident=1), key(ident=2)
    dump(t, [(old, blob(10, 1000, 10, 1000))])
    dump(t, [(new, blob(1, 60, 1, 60))])  # the old one died; its event comes after this dump
    t.destroy((old, blob(12, 1100, 11, 1050)))
    d = t.take()
    assert totals(d) == {old: (12, 1100, 11, 1050), new: (1, 60, 1, 60)}
    assert totals(fold(d)) == {ct.row_key(old): (13, 1160, 12, 1110)}


def test_missing_flows_keep_their_baseline_until_expired() -> None:
    t, k = FlowTable(keep_missing=2), key()
    dump(t, [(k, blob(1, 10, 1, 10))])
    dump(t, [])
    dump(t, [(k, blob(2, 20, 1, 10))])  # back (the kernel missed it in one dump)
    assert totals(t.take()) == {k: (2, 20, 1, 10)}
    for _ in range(3):
        dump(t, [])
    assert t.tracked == 0 and t.stats["expired_without_event"] == 1


def test_inconsistent_dump_proves_nothing() -> None:
    t, a, b = FlowTable(keep_missing=0), key(1), key(2)
    dump(t, [(a, blob(1, 1, 1, 1)), (b, blob(1, 1, 1, 1))])
    dump(t, [(a, blob(1, 1, 1, 1))], consistent=False)
    assert t.tracked == 2 and t.stats["expired_without_event"] == 0


def test_full_table_counts_new_flows_later_never_twice() -> None:
    t, a, b, c = FlowTable(max_flows=2), key(1), key(2), key(3)
    dump(t, [(a, blob(1, 10, 0, 0)), (b, blob(1, 10, 0, 0)), (c, blob(1, 10, 0, 0))])
    assert t.stats["untracked_sightings"] == 1 and t.tracked == 2
    dump(t, [(a, blob(1, 10, 0, 0)), (b, blob(1, 10, 0, 0)), (c, blob(2, 20, 0, 0))])
    t.destroy((a, blob(1, 10, 0, 0)))
    dump(t, [(b, blob(1, 10, 0, 0)), (c, blob(3, 30, 0, 0))])  # room again: c counted in full, once
    t.destroy((c, blob(4, 40, 0, 0)))
    assert totals(t.take()) == {a: (1, 10, 0, 0), b: (1, 10, 0, 0), c: (4, 40, 0, 0)}


def test_shrinking_counters_count_their_current_value() -> None:
    t, k = FlowTable(), key()
    dump(t, [(k, blob(10, 1000, 10, 1000))])
    t.take()
    dump(t, [(k, blob(2, 100, 11, 1100))])  # someone zeroed the orig direction meanwhile
    assert totals(t.take()) == {k: (2, 100, 1, 100)} and t.stats["counter_resets"] == 1


def test_report_folds_drops_and_sorts() -> None:
    loop = key(src="127.0.0.1", dst="127.0.0.1")
    loop6 = key(src="::1", dst="::1")
    icmp = key(proto=1, sport=0, dport=0)
    sctp = key(proto=132)
    keep = [key(2000, ident=7), key(1000, ident=8), key(1000, ident=9, src="fd00::1", dst="fd00::2")]
    deltas = {k: pack(1, 100, 1, 50) for k in (loop, loop6, icmp, sctp, *keep)}
    rows, dropped = report(deltas)
    assert dropped == Counter(loopback=2, protocol=2)
    assert {(r.orig_sport, r.family, r.orig_bytes, r.reply_bytes) for r in rows} == {
        (2000, 2, 100, 50), (1000, 2, 100, 50), (1000, 10, 100, 50),
    }  # fmt: skip
    assert [r.proto for r in report(deltas, protocols=WITH_SCTP)[0]].count(132) == 1
    assert report(deltas) == report(dict(reversed(list(deltas.items()))))


# -- model-based: a kernel with flows, dumps that race with DESTROY events ----------------------------

Op = tuple[str, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.integers(0, 5), st.integers(0, 3)),
        st.tuples(st.just("grow"), st.integers(0, 50), st.integers(1, 1500)),
        st.tuples(st.just("destroy"), st.integers(0, 50), st.integers(0, 0)),
        st.tuples(st.just("settle"), st.integers(0, 0), st.integers(0, 0)),
        st.tuples(st.just("poll"), st.integers(0, 10), st.integers(0, 1)),
        st.tuples(st.just("cut"), st.integers(0, 0), st.integers(0, 0)),
    ),
    max_size=80,
)


class Kernel:
    """Live conntracks, dying ones still visible to a dump, and the DESTROY events not yet read.

    A dying entry that is visible to a dump is one whose DYING bit the decoder did not see set (the
    decoder skips those): the table's stale-sighting rule is the second line of defence tested here.
    """

    def __init__(self) -> None:
        self.live: dict[bytes, list[int]] = {}
        self.dying: dict[bytes, list[int]] = {}
        self.events: list[tuple[bytes, bytes]] = []
        self.final: dict[bytes, tuple[int, int, int, int]] = {}
        self.ids = 0

    def apply(self, op: Op, table: FlowTable, measured: Counter[bytes]) -> None:
        name, a, b = op
        live = sorted(self.live)
        if name == "new" and all(ct.decode_key(k).orig_sport != 1000 + a for k in live):
            self.ids += 1
            self.live[key(1000 + a, ident=self.ids)] = [b, b * 60, b, b * 40]
        elif name == "grow" and live:
            c = self.live[live[a % len(live)]]
            c[0], c[1], c[2], c[3] = c[0] + 1, c[1] + b, c[2] + 1, c[3] + b // 2
        elif name == "destroy" and live:
            k = live[a % len(live)]
            c = self.live.pop(k)
            self.dying[k] = c  # the event goes out before the entry leaves the hash
            self.events.append((k, blob(*c)))
            self.final[k] = (c[0], c[1], c[2], c[3])
        elif name == "settle":
            self.dying.clear()
        elif name == "poll":
            self.deliver(table, a)
            entries = [(k, blob(*c)) for k, c in {**self.live, **self.dying}.items()]
            dump(table, entries if b else entries[::-1])
            self.deliver(table, len(self.events))
            self.dying.clear()  # the kernel unhashes a dying entry right after sending its event
        elif name == "cut":
            for k, v in table.take().items():
                measured[k] += v

    def deliver(self, table: FlowTable, n: int) -> None:
        for event in self.events[:n]:
            table.destroy(event)
        del self.events[:n]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_model_every_byte_counted_exactly_once(script: list[Op]) -> None:
    kernel, table, measured = Kernel(), FlowTable(keep_missing=2), Counter[bytes]()
    for op in script:
        kernel.apply(op, table, measured)
    while kernel.live:
        kernel.apply(("destroy", 0, 0), table, measured)
    for op in (("poll", 0, 0), ("settle", 0, 0), ("poll", 0, 0), ("cut", 0, 0)):
        kernel.apply(op, table, measured)
    expected = {k: v for k, v in kernel.final.items() if any(v)}
    assert {k: unpack(v) for k, v in measured.items() if v} == expected
    assert table.tracked == 0
