"""Which DNS name each address was answered for on this node, for as long as the answer holds. Pure.

Why it exists: a report names the remote addresses of its rows (``kubenetmon.shared.schema.names``) from the
DNS answers the node saw. This is the memory of those answers: address -> name, valid for the record's
TTL plus a grace period (clients cache answers a little longer than their TTL, and open connections
outlive them). Names are never guessed:

- an address answered with two different names while the first answer still held is *ambiguous*: it has
  no name until both answers have expired (``conflicts`` counts such answers);
- a lookup for a report returns only names valid at some moment of the report's span.

Memory is bounded: at most ``max_entries`` addresses; past that the address answered longest ago goes
first (``evictions`` counts those still valid). Expired entries are kept one report span longer (the
report cut after their expiry may still need them), then dropped by ``expire``.

No I/O, no clock: every call is given the time. Not thread-safe (the agent's one loop thread owns it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

AMBIGUOUS: Final = ""
"""The name of an address answered with two names at once."""


class _Entry:
    __slots__ = ("name", "until")

    def __init__(self, name: str, until: float) -> None:
        self.name, self.until = name, until


class DnsCache:
    """Address (4 or 16 raw bytes) -> name and valid-until (Unix seconds), oldest answer first."""

    __slots__ = ("_entries", "conflicts", "evictions", "grace_s", "max_entries")

    def __init__(self, *, grace_s: float, max_entries: int) -> None:
        if max_entries < 1 or grace_s < 0:
            raise ValueError("max_entries must be >= 1 and grace_s >= 0")
        self.grace_s, self.max_entries = grace_s, max_entries
        self._entries: dict[bytes, _Entry] = {}
        self.conflicts = 0
        """Answers that named an address already holding another valid name (it became ambiguous)."""
        self.evictions = 0
        """Valid entries dropped to stay within ``max_entries``."""

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, name: str, address: bytes, ttl: int, *, now: float) -> None:
        """Record that ``name`` was answered with ``address`` at ``now``, valid ``ttl`` seconds."""
        until = now + max(0, ttl) + self.grace_s
        entries = self._entries
        entry = entries.pop(address, None)  # re-inserted last: the order is that of the latest answer
        if entry is not None and entry.until >= now:
            if entry.name != name and entry.name != AMBIGUOUS:
                entry.name = AMBIGUOUS
                self.conflicts += 1
            entry.until = max(entry.until, until)
        else:
            entry = _Entry(name, until)
            if len(entries) >= self.max_entries:
                self._evict(now)
        entries[address] = entry

    def _evict(self, now: float) -> None:
        oldest = next(iter(self._entries))
        if self._entries.pop(oldest).until >= now:
            self.evictions += 1

    def names(self, addresses: Iterable[bytes], *, since: float) -> tuple[dict[bytes, str], int]:
        """The name of each of ``addresses`` whose answer held at ``since`` or later (valid, or expired
        within the span being reported), and how many of them were ambiguous."""
        entries = self._entries
        found: dict[bytes, str] = {}
        ambiguous = 0
        wanted = addresses if isinstance(addresses, (set, frozenset)) else set(addresses)
        for address in entries.keys() & wanted if len(entries) < len(wanted) else wanted & entries.keys():
            entry = entries[address]
            if entry.until >= since:
                if entry.name == AMBIGUOUS:
                    ambiguous += 1
                else:
                    found[address] = entry.name
        return found, ambiguous

    def names_of(self, *columns: Iterable[bytes], since: float) -> tuple[dict[bytes, str], int]:
        """``names`` of the addresses in ``columns`` (repeats allowed), found by probing the cache with each
        rather than building their set: a report's rows hold far more addresses than the cache names."""
        known = self._entries.__contains__
        hits: set[bytes] = set()
        for column in columns:
            hits.update(filter(known, column))
        return self.names(hits, since=since)

    def expire(self, *, before: float) -> int:
        """Drop entries that expired before ``before``; how many."""
        old = [address for address, entry in self._entries.items() if entry.until < before]
        for address in old:
            del self._entries[address]
        return len(old)
