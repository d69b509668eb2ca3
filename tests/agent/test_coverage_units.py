"""Source coverage, the pure parts: link counter growth, which addresses are inside the node, external
interfaces, and the rtnetlink route decoder on crafted messages."""

from __future__ import annotations

import socket
import struct

from kubenetmon.agent.coverage import Boundary, LinkMeter
from kubenetmon.agent.links import RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE, Layout, _route
from tests.support.builders import raw_row


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def test_link_meter_counts_growth_new_interfaces_from_their_first_read_and_resets() -> None:
    meter = LinkMeter()
    assert meter.observe({2: 1000}) == 0  # a baseline, nothing yet
    assert meter.observe({2: 1500, 3: 70}) == 500  # eth1 appears: counted from its next read
    assert meter.observe({2: 1600, 3: 100}) == 130
    assert meter.observe({2: 40, 3: 100}) == 40  # a re-created device counts from zero
    assert meter.observe({2: 2**64 - 1, 3: 100}) == 2**64 - 1 - 40
    assert meter.observe({}) == 0 and meter.last == {}


LAYOUT = Layout(
    names={1: "lo", 2: "eth0", 3: "cali1", 4: "vxlan.calico", 5: "cni0"},
    addresses=frozenset({ip("192.168.1.10"), ip("127.0.0.1"), ip("fd00::10")}),
    routes=(
        (ip("0.0.0.0"), 0, 2, True),  # default via the gateway on eth0
        (ip("192.168.1.0"), 24, 2, False),  # the node subnet, on eth0: outside
        (ip("10.244.1.5"), 32, 3, False),  # a local pod's veth: inside
        (ip("10.244.2.0"), 26, 4, True),  # other node's pods through the tunnel: outside
        (ip("10.244.3.0"), 24, 5, False),  # a bridge's pod subnet: inside
        (ip("fd00:1::"), 64, 5, False),
    ),
)


def test_inside_the_node_are_its_addresses_and_what_it_routes_to_its_pods() -> None:
    boundary = Boundary(LAYOUT, external=[2])
    inside = ["192.168.1.10", "10.244.1.5", "10.244.3.77", "fd00:1::5", "fd00::10"]
    outside = ["192.168.1.11", "10.244.1.6", "10.244.2.9", "8.8.8.8", "fd00:2::1", "0.0.0.1"]
    assert [boundary.inside(ip(a)) for a in inside] == [True] * len(inside)
    assert [boundary.inside(ip(a)) for a in outside] == [False] * len(outside)


def test_crossing_bytes_counts_flows_with_an_endpoint_outside() -> None:
    boundary = Boundary(LAYOUT, external=[2])
    rows = [
        raw_row("tcp", ("10.244.1.5", 1, "10.244.3.7", 80), ("10.244.3.7", 80, "10.244.1.5", 1)),  # on node
        raw_row("tcp", ("10.244.1.5", 1, "10.96.0.1", 80), ("10.244.2.9", 80, "10.244.1.5", 1)),  # via DNAT
        raw_row("udp", ("192.168.1.10", 1, "8.8.8.8", 53), ("8.8.8.8", 53, "192.168.1.10", 1)),  # the node
    ]
    assert boundary.crossing_bytes(rows) == 2 * (11 + 13)
    assert boundary.crossing_bytes([]) == 0


def test_external_interfaces_by_name_else_those_of_the_default_routes() -> None:
    assert LAYOUT.external(()) == {2: "eth0"}
    assert LAYOUT.external(("cni*", "lo")) == {1: "lo", 5: "cni0"}
    assert Layout().external(()) == {}


def _rtmsg(family: int, dst_len: int, table: int, attrs: list[tuple[int, bytes]], kind: int = 1) -> bytes:
    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 0, 0, kind, 0)
    for a, value in attrs:
        body += struct.pack("=HH", 4 + len(value), a) + value + bytes(-len(value) % 4)
    return body


def test_route_decoder_reads_destination_device_gateway_and_table() -> None:
    oif = struct.pack("=i", 3)
    assert _route(_rtmsg(2, 24, 254, [(RTA_DST, ip("10.1.0.0")), (RTA_OIF, oif)])) == (
        ip("10.1.0.0"),
        24,
        3,
        False,
    )
    via = [(RTA_DST, ip("10.2.0.0")), (RTA_OIF, oif), (RTA_GATEWAY, ip("10.0.0.2"))]
    assert _route(_rtmsg(2, 16, 254, via)) == (ip("10.2.0.0"), 16, 3, True)
    assert _route(_rtmsg(2, 0, 254, [(RTA_OIF, oif)])) == (bytes(4), 0, 3, False)
    assert _route(_rtmsg(2, 24, 255, [(RTA_OIF, oif)])) is None  # the local table
    big = [(RTA_OIF, oif), (RTA_TABLE, struct.pack("=I", 254))]
    assert _route(_rtmsg(10, 0, 252, big)) == (bytes(16), 0, 3, False)  # table in the attribute
    assert _route(_rtmsg(2, 24, 254, [(RTA_OIF, oif)], kind=2)) is None  # not unicast
    assert _route(_rtmsg(2, 24, 254, [(RTA_OIF, b"\xff\xff"), (0, b"")])) is not None  # short attrs
