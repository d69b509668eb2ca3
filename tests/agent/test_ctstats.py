"""Conntrack's own statistics read over ctnetlink, against the real kernel in a namespace of our own:
packets conntrack refuses (an invalid TCP flag combination) grow ``invalid``, tracked connections show
in ``entries``, the limit is the host's ``nf_conntrack_max``; and the decoder and delta rules, pure."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenetmon.agent import ctstats
from kubenetmon.agent.conntrack import Conntrack

RAW_SYN_FIN = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for port in range(int(sys.argv[1])):
    # source port, dest port, seq, ack, offset 5 words, flags SYN|FIN (never valid), window, csum, urg
    s.sendto(struct.pack("!HHIIBBHHH", 40000 + port, 9, 1, 0, 5 << 4, 0x03, 1024, 0, 0), ("127.0.0.1", 0))
"""
UDP = r"""
import socket, sys
for port in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", 20000 + port))
"""

pytestmark = pytest.mark.netns


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with loopback up and a netfilter hook, so conntrack tracks its traffic."""
    name = f"kct-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["nft", "add table inet kct"],
            ["nft", "add chain inet kct out { type filter hook output priority 0 ; }"],
            ["nft", "add rule inet kct out ct state new counter"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def run_in(netns: str, script: str, *args: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script, *args], check=True, timeout=30
    )


def test_invalid_packets_and_tracked_flows_show_in_the_statistics(netns: str) -> None:
    conntrack = Conntrack(netns=netns, events=False)
    try:
        before = conntrack.stats()
        run_in(netns, RAW_SYN_FIN, "25")
        run_in(netns, UDP, "7")
        after = conntrack.stats()
    finally:
        conntrack.close()
    grown = ctstats.growth(before, after)
    assert grown["invalid"] == 2 * 25  # refused twice each: leaving (output) and arriving on lo (prerouting)
    assert after.entries - before.entries == 7  # seven UDP flows, unreplied but tracked
    max_entries = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    assert after.max_entries == max_entries and 0 < after.fill < 1
    assert after.table_drops == before.table_drops == 0


def _msg(kind: int, attrs: list[tuple[int, int]], *, flags: int = 2) -> bytes:
    body = b"".join(struct.pack("=HH", 8, t) + v.to_bytes(4, "big") for t, v in attrs)
    head = struct.pack("=IHHII", 20 + len(body), kind, flags, 1, 0) + struct.pack("=BBH", 0, 0, 0)
    return head + body


def test_the_decoder_sums_cpus_and_knows_when_the_reply_is_complete() -> None:
    totals: dict[str, int] = {}
    cpu0 = _msg(ctstats.CT_GET_STATS_CPU, [(4, 3), (10, 1), (11, 2), (2, 100)])
    cpu1 = _msg(ctstats.CT_GET_STATS_CPU, [(4, 4), (9, 5), (15, 6), (8, 999)])  # 8 (insert): not kept
    assert not ctstats.decode(cpu0 + cpu1, totals)
    assert ctstats.decode(struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4), totals)  # NLMSG_DONE
    assert ctstats.decode(_msg(ctstats.CT_GET_STATS, [(1, 40), (2, 262144)]), totals)
    stats = ctstats.stats_of(totals)
    got = (stats.invalid, stats.drop, stats.early_drop, stats.insert_failed, stats.chaintoolong)
    assert got == (7, 1, 2, 5, 6)
    assert (stats.found, stats.entries, stats.max_entries, stats.table_drops) == (100, 40, 262144, 8)


def test_a_netlink_error_is_an_os_error() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(OSError):
        ctstats.decode(error, {})


def test_growth_restarts_from_the_new_value_when_a_counter_goes_back() -> None:
    assert ctstats.growth(None, ctstats.Stats(invalid=9))["invalid"] == 0
    assert ctstats.growth(ctstats.Stats(invalid=9), ctstats.Stats(invalid=12))["invalid"] == 3
    assert ctstats.growth(ctstats.Stats(invalid=9), ctstats.Stats(invalid=2))["invalid"] == 2


def test_requests_ask_per_cpu_as_a_dump_and_the_totals_once() -> None:
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", ctstats.request(ctstats.CT_GET_STATS_CPU, seq=5))
    assert kind == 0x104 and flags & ctstats.NLM_F_DUMP
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", ctstats.request(ctstats.CT_GET_STATS, seq=5))
    assert kind == 0x105 and not flags & ctstats.NLM_F_DUMP and socket.AF_UNSPEC == 0
