"""``MetaFeed.apply``: META records (as the metadata role's recorder makes them) into a live index.

Pure: no servers. The reading loop is exercised end to end in ``test_metadata``.
"""

from __future__ import annotations

from kubenetmon.enricher.history import Record, Recorder
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.metafeed import MetaFeed
from tests.support.builders import T0, node, pod, service


def ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def holder(index: Index, address: str, at: float) -> str | None:
    found = index.pod_at(ip(address), at, at + 1)
    return None if found is None else found.name


def feed_all(feed: MetaFeed, records: list[Record]) -> None:
    for record in records:
        feed.apply(record)


def recorded_cluster() -> tuple[Recorder, list[dict[str, object]]]:
    recorder = Recorder()
    pods = [pod("a", "10.0.0.1", node="n1"), pod("b", "10.0.0.2", node="n1")]
    recorder.observe("pods", "LISTED", pods, at=T0)
    recorder.observe("nodes", "LISTED", [node("n1", "192.168.0.1", zone="z1")], at=T0)
    recorder.observe("services", "LISTED", [service("dns", "10.96.0.10")], at=T0)
    return recorder, pods


def test_a_snapshot_alone_makes_the_index_ready() -> None:
    recorder, _ = recorded_cluster()
    feed = MetaFeed(Index())
    snapshot = recorder.snapshot(at=T0 + 10, period="7-1")
    feed_all(feed, snapshot[:-1])
    assert not feed.index.ready  # the services marker has not come yet
    feed.apply(snapshot[-1])
    assert feed.index.ready and feed.applied == len(snapshot)
    assert feed.index.sizes() == {"pods": 2, "pod_ips": 2, "nodes": 1, "services": 1}
    assert holder(feed.index, "10.0.0.1", T0 + 20) == "a"


def test_changes_after_the_snapshot_follow_it_in_time() -> None:
    recorder, pods = recorded_cluster()
    feed = MetaFeed(Index(grace_seconds=60))
    feed_all(feed, recorder.snapshot(at=T0 + 10, period="7-1"))
    feed_all(
        feed,
        recorder.observe("pods", "ADDED", [pod("c", "10.0.0.3", node="n1", created=T0 + 30)], at=T0 + 31),
    )
    feed_all(feed, recorder.observe("pods", "DELETED", [pods[0]], at=T0 + 40))
    assert holder(feed.index, "10.0.0.3", T0 + 35) == "c"
    assert holder(feed.index, "10.0.0.1", T0 + 90) == "a"  # deleted, but within the grace period
    assert holder(feed.index, "10.0.0.1", T0 + 101) is None


def test_a_listing_closes_what_it_lacks_unless_recorded_after_it() -> None:
    recorder, pods = recorded_cluster()
    feed = MetaFeed(Index(grace_seconds=60))
    feed_all(feed, recorder.snapshot(at=T0 + 10, period="7-1"))
    late = Recorder()  # another recorder's view, published out of order with the first one
    feed_all(
        feed, late.observe("pods", "ADDED", [pod("c", "10.0.0.3", node="n1", created=T0 + 45)], at=T0 + 50)
    )
    listing = recorder.observe("pods", "LISTED", [pods[1]], at=T0 + 40)  # a is gone; c not yet seen
    feed_all(feed, listing)
    assert holder(feed.index, "10.0.0.1", T0 + 101) is None  # a ended at T0 + 40
    assert holder(feed.index, "10.0.0.3", T0 + 500) == "c"  # c was recorded after the listing
    feed_all(feed, recorder.observe("pods", "LISTED", [pods[1]], at=T0 + 600))
    assert holder(feed.index, "10.0.0.3", T0 + 661) is None  # a later listing without c ends it
    assert holder(feed.index, "10.0.0.2", T0 + 700) == "b"
