"""What the labeler needs to know about each address, resolved once and reused across messages.

Why it exists: resolving an address (a node's? which pod held it during the interval? which range,
which class?) costs microseconds, and consecutive RAW messages keep repeating the same addresses.
``Endpoints.resolve`` maps whole address columns to ``Endpoint`` tuples with one dict lookup per
address (C-level ``map``), resolving only what it has not seen.

An answer is memoised only while it cannot change: the index's ``generation`` and the range table
are the same, and it does not depend on the interval (a node's address, an address no pod ever held,
an address whose single holder is a live pod created before the interval ended). Answers that depend
on the interval (ended pods in their grace period, reused IPs, pods younger than the interval) are
resolved again for each message. A message older than a memoised pod's creation bypasses the memo.

An ``Endpoint`` is one flat tuple (see ``LOCAL_FIELDS``): the labeler transposes many of them at once,
so fewer objects per address means fewer cache misses.

It must not do I/O or mutate the index (beyond its lookup counters), and knows nothing of rows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import compress
from operator import not_
from typing import Any, Final

from kubenetmon.enricher.connclass import LabelSettings, Remote
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.objects import Pod
from kubenetmon.enricher.prefixes import PrefixTable

NODE_ADDRESS: Final = "\0node"
"""Key of a node's own address (no pod can be on a node of that name)."""
NOT_A_POD: Final = "\0unknown"
"""Key of an address that no pod held during the interval."""
MEMO_MAX: Final = 200_000
"""Memoised addresses; past that the memo is emptied at once (and refilled by the traffic)."""
_MAPPED: Final = bytes(10) + b"\xff\xff"
_intern = sys.intern

KEY, REMOTE, LOCAL = 0, 1, 2
"""An endpoint is one flat tuple: its key (the pod's node name, ``NODE_ADDRESS`` or ``NOT_A_POD``),
its remote side tuple, then from ``LOCAL`` on its columns as the local side."""
LOCAL_FIELDS: Final = (
    "AvailabilityZone", "Node", "InstanceID", "Namespace", "Pod", "App", "WorkloadKind", "Workload",
    "IPv4", "IP",
)  # fmt: skip
"""The local side's columns (``local`` + name): its cloud, region, cluster and cell are the configured
ones. Then the ip family (4 or 6) and the zone number."""
FAMILY, ZONE = LOCAL + len(LOCAL_FIELDS), LOCAL + len(LOCAL_FIELDS) + 1
REMOTE_FIELDS: Final = ("Cloud", "Region", "Cluster", "Cell", *LOCAL_FIELDS)
"""The remote side tuple starts with these (``remote`` + name is the column)."""
CLASS, SERVICE, REMOTE_ZONE = range(len(REMOTE_FIELDS), len(REMOTE_FIELDS) + 3)
"""Then: connection class, cloud service, zone number."""

Endpoint = tuple[Any, ...]
"""One tuple per address, key and remote side first: the first cache line of a remote endpoint is all
the labeler reads of it besides its remote side tuple."""
_NODE: Final[Endpoint] = (NODE_ADDRESS, (), *[""] * (ZONE - 1))


class Endpoints:
    """Address -> ``Endpoint``, memoised; ``cross_zone[local zone number][remote zone number]``."""

    def __init__(self, settings: LabelSettings, *, index: Index, remotes: PrefixTable[Remote]) -> None:
        self.settings = settings
        self.index = index
        self._remotes = remotes
        self._memo: dict[bytes, Endpoint] = {}
        self._built: dict[bytes, tuple[Pod | None, Endpoint]] = {}
        self._generation = index.generation
        self._horizon = float("-inf")
        """Memoised pod answers hold only for intervals ending after this (creation - skew)."""
        self._zones: dict[str, int] = {"": 0}
        self.cross_zone: list[list[bool]] = [[False]]
        """Zone numbers are small ints (cached objects): looking them up allocates nothing."""

    @property
    def remotes(self) -> PrefixTable[Remote]:
        return self._remotes

    @remotes.setter
    def remotes(self, table: PrefixTable[Remote]) -> None:
        self._remotes = table
        self._forget()

    def resolve(
        self, first: Sequence[bytes], second: Sequence[bytes], *, start: int, end: int
    ) -> tuple[list[Endpoint], list[Endpoint]]:
        """The endpoints of two address columns during ``[start, end)``."""
        if self.index.generation != self._generation or len(self._memo) + len(self._built) > MEMO_MAX:
            self._forget()
        memo = self._memo if end > self._horizon else {}
        a = list(map(memo.get, first))
        b = list(map(memo.get, second))
        if all(a) and all(b):  # endpoints are non-empty tuples: only misses are false
            return a, b  # type: ignore[return-value]
        misses = set(compress(first, map(not_, a)))
        misses.update(compress(second, map(not_, b)))
        timed: dict[bytes, Endpoint] = {}
        for ip in misses:
            endpoint, stable = self._resolve(ip, start, end)
            (memo if stable else timed)[ip] = endpoint
        if not timed:
            return list(map(memo.__getitem__, first)), list(map(memo.__getitem__, second))
        get = memo.get
        return [get(ip) or timed[ip] for ip in first], [get(ip) or timed[ip] for ip in second]

    def _forget(self) -> None:
        self._memo.clear()
        self._built.clear()
        self._generation = self.index.generation
        self._horizon = float("-inf")

    def _resolve(self, ip: bytes, start: int, end: int) -> tuple[Endpoint, bool]:
        """The endpoint of ``ip`` and whether that answer holds for any later interval."""
        index = self.index
        if ip in index.node_ips:
            return _NODE, True
        candidates = index.by_ip.get(ip)
        if not candidates:
            return self._build(ip, None), True
        pod = index.pod_at(ip, start, end)
        if pod is None or pod.until is not None or len(candidates) > 1:
            built = self._built.get(ip)
            if built is not None and built[0] is pod:
                return built[1], False
            endpoint = self._build(ip, pod)
            self._built[ip] = (pod, endpoint)
            return endpoint, False
        self._horizon = max(self._horizon, pod.since - index.skew)
        return self._build(ip, pod), True

    def _build(self, ip: bytes, pod: Pod | None) -> Endpoint:
        family, ipv4, ip16 = _address(ip)
        remote = self._remotes.lookup(ip)
        assert remote is not None  # remote_table maps "no match" to a value too
        if pod is None:
            zone = self._zone(remote.fields[4])
            far = (*remote.fields, "", "", "", ipv4, ip16, remote.cls, remote.service, zone)
            return (NOT_A_POD, far, "", "", "", "", "", "", "", "", ipv4, ip16, family, 0)
        s = self.settings
        node = self.index.nodes.get(pod.node)
        zone_name, instance = (node.zone, node.instance_id) if node is not None else ("", "")
        zone = self._zone(zone_name)
        # LOCAL_FIELDS order. Names many pods share are one object each (interned): the encoder reads
        # every value it packs, and a few hot objects miss the cache less than a copy per pod
        fields: tuple[Any, ...] = (zone_name, _intern(pod.node), instance, _intern(pod.namespace), pod.name)
        fields += (_intern(pod.app), _intern(pod.workload_kind), _intern(pod.workload), ipv4, ip16)
        far = (remote.cloud, remote.region, s.cluster, s.cell, *fields, remote.cls, remote.service)
        return (pod.node, (*far, zone), *fields, family, zone)

    def _zone(self, name: str) -> int:
        """The zone's number (0: no zone), extending ``cross_zone`` for a new one."""
        number = self._zones.get(name)
        if number is None:
            number = self._zones[name] = len(self._zones)
            for other, row in enumerate(self.cross_zone):
                row.append(other != 0)  # both known and different
            self.cross_zone.append([other not in (0, number) for other in range(number + 1)])
        return number


def _address(ip: bytes) -> tuple[int, int, bytes]:
    """ipFamily, IPv4 as an integer (0 for IPv6), the 16-byte (IPv4-mapped) address."""
    if len(ip) == 4:
        return 4, int.from_bytes(ip, "big"), _MAPPED + ip
    return 6, 0, ip
