"""The conntrack lab: a small routed network of Linux network namespaces with real kernel conntrack.

Topology, as a Kubernetes cluster looks from its nodes::

    pod ns --veth-- node ns --veth--+
    pod ns --veth--/   (router,      |-- fabric ns (bridge) --- external ns
                       conntrack,   |
    pod ns --veth-- node ns --veth--+
                       observer)

Each node namespace routes its pods' traffic (IPv4 and IPv6) and tracks it with conntrack: accounting and
events on, an nftables table of the lab's own (``ct state`` rules, optional conntrack zones and marks per
pod, optional masquerade to the fabric, optional DNAT "services"). A node is where the agent reads
(``--netns <node.netns>``). Addresses: fabric 10.0.0.0/16 and fd00::/64 (node k is .k / ::k), pods of node k
in 10.k.0.0/16 and fd00:1:k::/64, externals 10.0.0.200+ and fd00::c8+ unless given. All of it exists only
inside namespaces the lab creates; nothing is configured on the host and no traffic leaves the lab.
Each namespace has its own view of conntrack (entries, sysctls, events); the table limit
(``nf_conntrack_max``) and its hash are shared by all namespaces of the machine.

Namespace names are ``<prefix><pid>-<random>-<role>`` (prefix ``kl`` for the tests, ``kd`` for the demo of
``kubenetmon up``); ``Lab.close()`` deletes every namespace the lab made, and ``sweep`` deletes those left
by processes that died without closing their lab.

Use::

    n1, n2 = lab.node("n1", zone="az-a"), lab.node("n2", zone="az-b", masquerade=True)
    a, b = lab.pod("a", node=n1), lab.pod("b", node=n2, ct_zone=3)      # a.ipv4, a.ipv6 for the pod index
    out = lab.external("net", ipv4="203.0.113.7", ipv6="2001:db8::7")
    lab.service("10.96.0.10", 80, backend=b, backend_port=srv.port)       # DNAT on every node so far
    watch = n1.destroy_watch()                 # before the traffic whose DESTROY events it must see
    conn = a.tcp_connect(b.server("tcp", family=6)); conn.exchange(1000, 50_000); flow = conn.close()
    n1.find(flow).counters                     # the kernel's counters (conntrack -L), the ground truth
    # the agent under test reads n1 with ``--netns n1.netns``; a node is also a host (hostNetwork traffic)
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any, Final

from kubenetmon.cli.lab.hosts import NETNS_DIR, Host, Node, Pod, run

PREFIX: Final = "kl"
__all__ = ["NETNS_DIR", "PREFIX", "Host", "Lab", "Node", "Pod", "sweep"]


class Lab:
    """One test's network: nodes, pods, externals; ``close()`` removes every namespace it made."""

    def __init__(self, *, prefix: str = PREFIX) -> None:
        self.tag = f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.closers: list[Any] = []
        self.nodes: list[Node] = []
        self.externals: list[Host] = []
        self.fabric = f"{self.tag}-fabric"
        run("ip", "netns", "add", self.fabric)
        self.namespaces.append(self.fabric)
        run(
            "ip",
            "-n",
            self.fabric,
            "-batch",
            "-",
            stdin="link set lo up\nlink add br0 type bridge\nlink set br0 up\n",
        )

    def node(self, name: str, *, zone: str = "", masquerade: bool = False) -> Node:
        node = Node(self, name, index=len(self.nodes) + 1, zone=zone, masquerade=masquerade)
        for other in self.nodes:
            other.ip(
                f"route add {node.pod_cidr4} via {node.ipv4}", f"route add {node.pod_cidr6} via {node.ipv6}"
            )
            node.ip(
                f"route add {other.pod_cidr4} via {other.ipv4}",
                f"route add {other.pod_cidr6} via {other.ipv6}",
            )
        for ext in self.externals:
            self._route_external(ext, node)
        self.nodes.append(node)
        self.hosts.append(node)
        return node

    def pod(self, name: str, *, node: Node, ct_zone: int = 0, ct_mark: int = 0) -> Pod:
        """A pod on ``node``; ``ct_zone``/``ct_mark`` put its flows in a conntrack zone / give them a mark."""
        pod = Pod(self, name, node=node, index=len(node.pods) + 2)
        node.pods.append(pod)
        self.hosts.append(pod)
        rules = []
        if ct_zone:
            for fam, addr in (("ip", pod.ipv4), ("ip6", pod.ipv6)):
                for chain in ("raw_pre", "raw_out"):
                    rules.append(
                        f"add rule inet kubenetmon_lab {chain} {fam} saddr {addr} ct zone set {ct_zone}"
                    )
                    rules.append(
                        f"add rule inet kubenetmon_lab {chain} {fam} daddr {addr} ct zone set {ct_zone}"
                    )
        if ct_mark:
            for fam, addr in (("ip", pod.ipv4), ("ip6", pod.ipv6)):
                rules.append(f"add rule inet kubenetmon_lab marks {fam} saddr {addr} ct mark set {ct_mark}")
        if rules:
            node.nft("\n".join(rules) + "\n")
        return pod

    def external(self, name: str, *, ipv4: str = "", ipv6: str = "") -> Host:
        """A host on the fabric outside the cluster (default addresses in the fabric subnet)."""
        i = len(self.externals)
        ext = Host(self, name, ipv4=ipv4 or f"10.0.0.{200 + i}", ipv6=ipv6 or f"fd00::{200 + i:x}")
        veth = f"x{i}"
        run(
            "ip",
            "-n",
            self.fabric,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ext.netns,
        )
        run("ip", "-n", self.fabric, "link", "set", veth, "master", "br0", "up")
        ext.ip(
            f"addr add {ext.ipv4}/32 dev eth0",
            f"addr add {ext.ipv6}/128 dev eth0 nodad",
            "link set eth0 up",
            "route add 10.0.0.0/16 dev eth0 scope link",
            "route add fd00::/64 dev eth0",
        )
        for node in self.nodes:
            self._route_external(ext, node)
        self.externals.append(ext)
        self.hosts.append(ext)
        return ext

    @staticmethod
    def _route_external(ext: Host, node: Node) -> None:
        ext.ip(f"route add {node.pod_cidr4} via {node.ipv4}", f"route add {node.pod_cidr6} via {node.ipv6}")
        node.ip(f"route replace {ext.ipv4}/32 dev fab0", f"route replace {ext.ipv6}/128 dev fab0")

    def service(self, vip: str, port: int, *, backend: Host, backend_port: int, proto: str = "tcp") -> None:
        """A ClusterIP-like DNAT ``vip:port -> backend:backend_port`` on every node (existing ones)."""
        v6 = ipaddress.ip_address(vip).version == 6
        table, fam = ("ip6", "ip6") if v6 else ("ip", "ip")
        target = f"[{backend.ipv6}]:{backend_port}" if v6 else f"{backend.ipv4}:{backend_port}"
        for node in self.nodes:
            node.nft(
                "".join(
                    f"add rule {table} kubenetmon_lab_nat {chain} {fam} daddr {vip} {proto} dport {port} "
                    f"dnat to {target}\n"
                    for chain in ("nat_pre", "nat_out")
                )
            )

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # cleanup goes on: every namespace must go
                pass
        for host in self.hosts:
            host.close()
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def sweep(prefix: str = PREFIX, *, only_dead: bool) -> list[str]:
    """Delete ``prefix`` lab namespaces left by dead processes (and, unless ``only_dead``, by this one)."""
    removed = []
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-[0-9a-f]+-")
    for entry in sorted(NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []:
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        alive = pid != os.getpid() and Path(f"/proc/{pid}").exists()
        if alive or (only_dead and pid == os.getpid()):
            continue
        subprocess.run(["ip", "netns", "del", entry.name], capture_output=True)
        removed.append(entry.name)
    return removed
