"""The DNS cache: names for their TTL plus grace, never a guess (ambiguous, expired), bounded memory."""

from __future__ import annotations

import pytest

from kubenetmon.agent.dnscache import DnsCache

A, B, C = b"\xcb\x00\x71\x07", b"\xcb\x00\x71\x08", bytes(range(16))


def test_a_name_holds_for_its_ttl_plus_the_grace_then_not() -> None:
    cache = DnsCache(grace_s=5, max_entries=10)
    cache.answer("api.example.com", A, 30, now=100)
    assert cache.names([A, B], since=135) == ({A: "api.example.com"}, 0)
    assert cache.names([A], since=135.5) == ({}, 0)  # expired before the span began: no name


def test_a_span_still_sees_a_name_that_expired_within_it() -> None:
    cache = DnsCache(grace_s=0, max_entries=10)
    cache.answer("api.example.com", A, 10, now=100)
    assert cache.names([A], since=105) == ({A: "api.example.com"}, 0)  # the span began while it held
    assert cache.expire(before=111) == 1 and len(cache) == 0


def test_the_same_name_again_extends_it_and_is_no_conflict() -> None:
    cache = DnsCache(grace_s=0, max_entries=10)
    cache.answer("api.example.com", A, 10, now=100)
    cache.answer("api.example.com", A, 10, now=108)
    assert cache.names([A], since=117) == ({A: "api.example.com"}, 0) and cache.conflicts == 0


def test_two_names_for_one_address_at_once_give_none_and_are_counted() -> None:
    cache = DnsCache(grace_s=0, max_entries=10)
    cache.answer("a.example.com", A, 60, now=100)
    cache.answer("b.example.com", A, 10, now=110)
    cache.answer("c.example.com", A, 10, now=111)  # already ambiguous: counted once
    assert cache.names([A], since=111) == ({}, 1) and cache.conflicts == 1
    assert cache.names([A], since=159) == ({}, 1)  # ambiguous until the longest answer expired
    cache.answer("b.example.com", A, 10, now=161)  # both expired: a fresh answer names it again
    assert cache.names([A], since=161) == ({A: "b.example.com"}, 0)


def test_an_answer_after_expiry_replaces_the_old_name() -> None:
    cache = DnsCache(grace_s=1, max_entries=10)
    cache.answer("a.example.com", A, 10, now=100)
    cache.answer("b.example.com", A, 10, now=112)
    assert cache.names([A], since=112) == ({A: "b.example.com"}, 0) and cache.conflicts == 0


def test_a_flood_past_the_cap_stays_bounded_and_counts_evictions() -> None:
    cache = DnsCache(grace_s=0, max_entries=100)
    for i in range(10_000):
        cache.answer(f"n{i}.example.com", i.to_bytes(4, "big"), 300, now=100 + i * 0.001)
    assert len(cache) == 100 and cache.evictions == 9_900
    newest = (9_999).to_bytes(4, "big")
    assert cache.names([newest, (0).to_bytes(4, "big")], since=100) == ({newest: "n9999.example.com"}, 0)


def test_expired_entries_make_room_without_counting_as_evictions() -> None:
    cache = DnsCache(grace_s=0, max_entries=2)
    cache.answer("a.example.com", A, 1, now=100)
    cache.answer("b.example.com", B, 1, now=100)
    cache.answer("c.example.com", C, 1, now=200)
    assert len(cache) == 2 and cache.evictions == 0


@pytest.mark.parametrize("ttl", [0, -5, 2**31 - 1, 2**64 - 1])
def test_absurd_ttls_are_taken_as_they_come(ttl: int) -> None:
    cache = DnsCache(grace_s=2, max_entries=2)
    cache.answer("a.example.com", A, ttl, now=100)
    assert cache.names([A], since=102) == ({A: "a.example.com"}, 0)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DnsCache(grace_s=0, max_entries=0)
    with pytest.raises(ValueError):
        DnsCache(grace_s=-1, max_entries=1)


def test_names_of_columns_equal_names_of_their_set() -> None:
    """A report's two address columns, probed in the cache, give what the set of their addresses gives:
    repeats, an ambiguous address on both sides, an expired one and unknown ones included."""
    cache = DnsCache(grace_s=0, max_entries=10)
    cache.answer("api.example.com", A, 30, now=100)
    cache.answer("one.example.org", C, 30, now=100)
    cache.answer("two.example.org", C, 30, now=101)  # ambiguous
    cache.answer("old.example.com", B, 1, now=100)  # expired before the span
    unknown = [bytes([10, 0, 0, i]) for i in range(50)]
    sources, replies = [A, C, *unknown, A, B], [*unknown, C, A, B, C]
    expected = cache.names(set(sources) | set(replies), since=110)
    assert expected == ({A: "api.example.com"}, 1)
    assert cache.names_of(iter(sources), iter(replies), since=110) == expected
    assert cache.names_of(since=110) == ({}, 0)
