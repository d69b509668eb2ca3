"""The DNS watch: what it takes from an answer (pure), and what it sees on a lab node's real packet socket."""

from __future__ import annotations

import ipaddress
import socket
import time

import dns.message
import dns.rrset
import pytest

from kubenetmon.agent.dnscache import DnsCache
from kubenetmon.agent.dnswatch import DnsWatch, answers, udp_payload
from tests.fixtures.lab import Lab
from tests.support.dnsserver import DnsServer, Zone, answer_for, resolve
from tests.support.waiting import wait_until


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _response(question: str, *records: tuple[str, int, str, str], rcode: int = 0) -> bytes:
    """An answer to ``question`` (A) holding ``records`` (owner, ttl, type, data) in its answer section."""
    response = dns.message.make_response(dns.message.make_query(question, "A"))
    response.set_rcode(rcode)
    for owner, ttl, rdtype, data in records:
        response.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, data))
    return response.to_wire()


# ------------------------------------------------------------------------------------------- parsing


def test_a_cname_chain_is_named_by_the_question_with_the_shortest_ttl() -> None:
    wire = _response(
        "API.Example.com",
        ("api.example.com.", 300, "CNAME", "edge.cdn.net."),
        ("edge.cdn.net.", 60, "CNAME", "e1.edge.cdn.net."),
        ("e1.edge.cdn.net.", 3600, "A", "203.0.113.7"),
        ("e1.edge.cdn.net.", 3600, "A", "203.0.113.8"),
    )
    assert answers(wire) == ("api.example.com", [(_ip("203.0.113.7"), 60), (_ip("203.0.113.8"), 60)])


def test_records_about_other_names_are_not_taken() -> None:
    wire = _response(
        "api.example.com",
        ("api.example.com.", 30, "A", "203.0.113.7"),
        ("unrelated.example.org.", 30, "A", "198.51.100.1"),  # not on the question's chain: ignored
        ("api.example.com.", 30, "AAAA", "2001:db8::7"),
    )
    assert answers(wire) == ("api.example.com", [(_ip("203.0.113.7"), 30), (_ip("2001:db8::7"), 30)])


def test_owners_written_out_or_pointing_at_the_question_or_elsewhere() -> None:
    """Most answers write each record's owner as a pointer to the question (read without decoding it
    again); an owner written out in full, in any case, is the same name; a pointer into the question's
    name (its suffix) is another name."""
    name = b"\x03api\x07example\x03com\x00"
    header = b"\x12\x34\x81\x80\x00\x01\x00\x04\x00\x00\x00\x00"

    def a_record(owner: bytes, address: str, ttl: int) -> bytes:
        return owner + b"\x00\x01\x00\x01" + ttl.to_bytes(4, "big") + b"\x00\x04" + _ip(address)

    wire = header + name + b"\x00\x01\x00\x01"
    wire += a_record(b"\xc0\x0c", "203.0.113.1", 10)  # a pointer to the question
    wire += a_record(b"\x03API\x07Example\x03COM\x00", "203.0.113.2", 20)  # written out, upper case
    wire += a_record(b"\x03api\xc0\x10", "203.0.113.3", 30)  # "api" + a pointer to "example.com"
    wire += a_record(b"\xc0\x10", "203.0.113.4", 40)  # a pointer to "example.com": another name
    assert answers(wire) == (
        "api.example.com",
        [(_ip("203.0.113.1"), 10), (_ip("203.0.113.2"), 20), (_ip("203.0.113.3"), 30)],
    )
    assert answers(wire[:-3]) is None  # the last record cut short: no answer at all


@pytest.mark.parametrize(
    "wire",
    [
        _response("gone.example.com", rcode=3),  # NXDOMAIN
        _response("empty.example.com"),  # no answer (a search-path miss, an AAAA-less name)
        _response("only.example.com", ("only.example.com.", 30, "CNAME", "elsewhere.example.net.")),
        dns.message.make_query("q.example.com", "A").to_wire(),  # a query, not an answer
        _response("x.example.com", ("x.example.com.", 30, "A", "203.0.113.7"))[:20],  # truncated
        b"\xff" * 512,
        b"",
        _response("bad\\032name.example.com", ("bad\\032name.example.com.", 30, "A", "203.0.113.7")),
        _response("loop.example.com", ("loop.example.com.", 30, "CNAME", "loop.example.com.")),
    ],
    # fixed ids: a message's id is random, and every parallel test worker must collect the same names
    ids=["nxdomain", "empty", "dangling-cname", "query", "cut", "garbage", "nothing", "bad-name", "loop"],
)
def test_what_is_not_a_usable_answer_gives_nothing(wire: bytes) -> None:
    assert answers(wire) is None


def test_udp_payload_reads_ipv4_with_options_and_ipv6_and_refuses_the_rest() -> None:
    body = b"dns!"
    udp = b"\x00\x35\x9c\x40" + (8 + len(body)).to_bytes(2, "big") + b"\x00\x00" + body
    v4 = bytes([0x46, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]) + bytes(8) + bytes(4) + udp  # IHL 6: options
    v6 = bytes([0x60, 0, 0, 0, 0, len(udp), 17, 64]) + bytes(32) + udp
    assert udp_payload(v4) == body and udp_payload(v6) == body
    assert udp_payload(v4[:9] + b"\x06" + v4[10:]) is None  # TCP
    assert udp_payload(v4[:6] + b"\x00\x10" + v4[8:]) is None  # a later fragment
    assert udp_payload(v4[:24] + b"\x14\xe9" + v4[26:]) is None  # from port 5353
    assert udp_payload(v6[:6] + b"\x00" + v6[7:]) is None  # an extension header
    assert udp_payload(b"\x45" + bytes(10)) is None


# ------------------------------------------------------------------------------------------- the lab


def _watch(lab: Lab, netns: str, *, max_entries: int = 1000, grace_s: float = 0) -> DnsWatch:
    watch = DnsWatch(DnsCache(grace_s=grace_s, max_entries=max_entries), netns=netns)
    lab.closers.append(watch.close)
    return watch


ZONE: Zone = {
    ("api.example.com", "A"): [("203.0.113.7", 3600)],
    ("api.example.com", "AAAA"): [("2001:db8::7", 3600)],
    ("a.example.org", "A"): [("198.51.100.7", 3600)],
    ("b.example.org", "A"): [("198.51.100.7", 3600)],
}


@pytest.mark.netns
def test_answers_crossing_the_node_are_remembered_and_others_are_not(lab: Lab) -> None:
    node = lab.node("n1", zone="az-a")
    pod = lab.pod("p", node=node)
    server = DnsServer(lab.external("dns"), ZONE)
    watch = _watch(lab, node.netns)
    other = lab.node("n2", zone="az-b")  # traffic of another node never crosses n1
    far = lab.pod("q", node=other)
    assert resolve(far, server.address, "a.example.org") == ["198.51.100.7"]
    assert resolve(pod, server.address, "api.example.com") == ["203.0.113.7"]
    assert resolve(pod, server.address, "api.example.com", "AAAA") == ["2001:db8::7"]
    assert resolve(pod, server.address, "nowhere.example.com") == []
    got: dict[bytes, str] = {}

    def seen() -> bool:
        watch.read(now=time.time())
        got.update(
            watch.cache.names([_ip("203.0.113.7"), _ip("2001:db8::7"), _ip("198.51.100.7")], since=0)[0]
        )
        return len(got) >= 2

    wait_until(seen, timeout=10, what="the answers on the node's socket")
    assert got == {_ip("203.0.113.7"): "api.example.com", _ip("2001:db8::7"): "api.example.com"}
    assert watch.answers == 2 and watch.lost == 0  # each answer once, however many interfaces it crossed


@pytest.mark.netns
def test_only_udp_from_port_53_is_read(lab: Lab) -> None:
    node = lab.node("n1", zone="az-a")
    pod = lab.pod("p", node=node)
    ext = lab.external("dns")
    watch = _watch(lab, node.netns)
    sock = ext.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ext.ipv4, 5353))
    query = dns.message.make_query("forged.example.com", "A")
    wire = answer_for(query, {("forged.example.com", "A"): [("203.0.113.99", 60)]}).to_wire()
    sock.sendto(wire, (pod.ipv4, 40000))
    sock.close()
    server = DnsServer(ext, {})
    server.push(pod.ipv4, 40000, "real.example.com", "203.0.113.98")

    def seen() -> bool:
        watch.read(now=time.time())
        return watch.answers >= 1

    wait_until(seen, timeout=10, what="the port 53 answer")
    names, _ = watch.cache.names([_ip("203.0.113.99"), _ip("203.0.113.98")], since=0)
    assert names == {_ip("203.0.113.98"): "real.example.com"} and watch.answers == 1


@pytest.mark.netns
def test_two_names_for_one_address_give_none_and_are_counted(lab: Lab) -> None:
    node = lab.node("n1", zone="az-a")
    pod = lab.pod("p", node=node)
    server = DnsServer(lab.external("dns"), ZONE)
    watch = _watch(lab, node.netns)
    assert resolve(pod, server.address, "a.example.org") == ["198.51.100.7"]
    assert resolve(pod, server.address, "b.example.org") == ["198.51.100.7"]

    def seen() -> bool:
        watch.read(now=time.time())
        return watch.answers >= 2

    wait_until(seen, timeout=10, what="both answers")
    assert watch.cache.names([_ip("198.51.100.7")], since=0) == ({}, 1) and watch.cache.conflicts == 1


@pytest.mark.netns
def test_a_flood_of_answers_past_the_cap_stays_bounded_and_counts_evictions(lab: Lab) -> None:
    node = lab.node("n1", zone="az-a")
    pod = lab.pod("p", node=node)
    server = DnsServer(lab.external("dns"), {})
    watch = _watch(lab, node.netns, max_entries=100)
    flood, batch = 2_000, 250  # read between batches: the socket's buffer is not what is tested here
    for first in range(0, flood, batch):
        for i in range(first, first + batch):
            server.push(pod.ipv4, 40000, f"n{i}.flood.example.com", f"198.18.{i >> 8}.{i & 255}", ttl=3600)

        def seen(upto: int = first + batch) -> bool:
            watch.read(now=time.time())
            return watch.answers + watch.lost >= upto

        wait_until(seen, timeout=30, what="the flood")
    assert watch.lost == 0, "the socket buffer overflowed: the flood was not all read"
    assert len(watch.cache) == 100 and watch.cache.evictions == flood - 100
    last = _ip(f"198.18.{(flood - 1) >> 8}.{(flood - 1) & 255}")
    assert watch.cache.names([last, _ip("198.18.0.0")], since=0)[0] == {
        last: f"n{flood - 1}.flood.example.com"
    }


def test_forged_and_absurd_answers_give_nothing_or_stay_bounded() -> None:
    header = b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    loop = header + b"\xc0\x0c\x00\x01\x00\x01"  # the question's name points at itself
    assert answers(loop) is None
    claims_more = bytearray(_response("a.example.com", ("a.example.com.", 30, "A", "203.0.113.7")))
    claims_more[6:8] = b"\xff\xff"  # 65535 answers claimed, one present
    assert answers(bytes(claims_more)) is None
    many = [("many.example.com.", 2**31 - 1, "A", f"198.18.{i >> 8}.{i & 255}") for i in range(1000)]
    name, found = answers(_response("many.example.com", *many)) or ("", [])
    assert name == "many.example.com" and len(found) == 1000 and {ttl for _, ttl in found} == {2**31 - 1}
    cache = DnsCache(grace_s=0, max_entries=100)
    for address, ttl in found:
        cache.answer(name, address, ttl, now=0)
    assert len(cache) == 100 and cache.evictions == 900
