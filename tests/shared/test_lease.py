"""Key-value buckets and the lease against a real nats-server (time is a test clock, never a sleep)."""

from __future__ import annotations

from kubenetmon.shared.broker import Broker, Lease


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_missing_bucket_is_none_unless_created(broker: Broker) -> None:
    assert await broker.bucket("metadata") is None
    kv = await broker.bucket("metadata", create=True)
    assert kv is not None and kv.bucket == f"{broker.settings.stream_prefix}_metadata"
    again = await broker.bucket("metadata")
    assert again is not None
    assert await kv.get("k") is None
    first = await kv.create("k", b"1")
    assert first is not None and await kv.create("k", b"2") is None
    assert await kv.update("k", b"3", last=first + 100) is None
    second = await kv.update("k", b"3", last=first)
    entry = await again.get("k")
    assert entry is not None and (entry.value, entry.revision) == (b"3", second)


async def test_one_holder_renews_and_the_other_takes_over_only_after_the_ttl(broker: Broker) -> None:
    kv = await broker.bucket("metadata", create=True)
    assert kv is not None
    clock = Clock()
    a = Lease(kv, key="lease", holder="a", ttl_s=10, clock=clock)
    b = Lease(kv, key="lease", holder="b", ttl_s=10, clock=clock)
    assert await a.attempt() and a.held and a.term > 0
    assert not await b.attempt()
    for _ in range(5):  # a renews every ttl/4: b never sees the same revision for 0.7 ttl
        clock.now += 3
        assert await a.attempt()
        assert not await b.attempt() and not b.held
    term = a.term  # a dies after this renewal, which b saw at once (the loop's last attempt)
    clock.now += 4.9
    assert a.held  # a's own view: renewed 4.9 s ago, still under 0.5 ttl
    assert not await b.attempt()
    clock.now += 2.0
    assert not await b.attempt()  # b saw this revision 6.9 s ago: not yet
    assert not a.held  # 0.5 ttl without renewal: a no longer acts, well before b can take over
    clock.now += 0.2
    assert await b.attempt() and b.held and b.term > term
    assert not await a.attempt() and a.revision == 0  # a comes back: its renewal fails, it stays out


async def test_a_dead_holder_is_replaced_within_the_ttl_whatever_the_poll_phase(broker: Broker) -> None:
    kv = await broker.bucket("metadata", create=True)
    assert kv is not None
    clock = Clock()
    a = Lease(kv, key="lease", holder="a", ttl_s=10, clock=clock)
    b = Lease(kv, key="lease", holder="b", ttl_s=10, clock=clock)
    assert await a.attempt()  # a's last renewal, then a dies
    died = clock.now
    clock.now += b.poll_s - 0.001  # the worst phase: b first looks just under one poll later
    took_over = None
    while took_over is None and clock.now - died <= 10:
        if await b.attempt():
            took_over = clock.now
        clock.now += b.poll_s
    assert took_over is not None and took_over - died <= 10
    assert took_over - died >= 5  # never before a, silent, had stopped acting (0.5 ttl)


async def test_a_released_lease_is_free_at_once(broker: Broker) -> None:
    kv = await broker.bucket("metadata", create=True)
    assert kv is not None
    clock = Clock()
    a = Lease(kv, key="lease", holder="a", ttl_s=10, clock=clock)
    b = Lease(kv, key="lease", holder="b", ttl_s=10, clock=clock)
    assert await a.attempt()
    assert not await b.attempt()
    await a.release()
    assert not a.held
    assert await b.attempt() and b.held
