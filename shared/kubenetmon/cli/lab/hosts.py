"""The hosts of a lab: namespaces with addresses (``Host``), routers with conntrack (``Node``), pods.

A ``Host`` owns one network namespace and a thread that lives inside it: sockets are created there (a
socket stays in the namespace it was made in, whichever thread uses it) and sysctls are read and written
there. A ``Node`` routes its pods' traffic and tracks it with conntrack (accounting and events on, an
nftables table of the lab's own); it is where an agent reads. The ``Lab`` (``network``) wires them; a
host sees it only as an ``Owner`` (its tag, fabric, and the lists it registers in), so this module does
not import ``network``.

Standard library only; ``ip``, ``nft`` and ``conntrack`` run inside the lab's namespaces, never on the host.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol

from kubenetmon.cli.lab.kernel import CtEntry, DestroyWatch, list_table
from kubenetmon.cli.lab.traffic import Flow, Server, TcpClient, UdpClient

NETNS_DIR: Final = Path("/run/netns")
_CLONE_NEWNET: Final = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Owner(Protocol):
    """What a host needs of the lab it belongs to (``network.Lab`` is one)."""

    tag: str
    """Prefix of every namespace name of the lab."""
    fabric: str
    """The namespace of the fabric bridge nodes attach to."""
    namespaces: list[str]
    """Namespaces to delete when the lab closes."""
    closers: list[Any]
    """Callables to run when the lab closes (sockets, servers, watches)."""


def enter_netns(netns: str) -> None:
    """Move the calling thread into the named network namespace."""
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run(*cmd: str, stdin: str | None = None) -> str:
    """Run a command; its stdout, or ``RuntimeError`` with its stderr."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{stdin or ''}"
        )
    return proc.stdout


class Host:
    """A network namespace with addresses; makes sockets inside it and runs commands in it."""

    def __init__(self, lab: Owner, name: str, *, ipv4: str, ipv6: str) -> None:
        self.lab, self.name, self.ipv4, self.ipv6 = lab, name, ipv4, ipv6
        self.netns = f"{lab.tag}-{name}"
        run("ip", "netns", "add", self.netns)
        lab.namespaces.append(self.netns)
        self._pool = ThreadPoolExecutor(1, f"netns-{name}", initializer=enter_netns, initargs=(self.netns,))
        for conf in ("all", "default"):  # no duplicate address detection: addresses usable at once
            self.sysctl(f"net/ipv6/conf/{conf}/accept_dad", 0)
        self.ip("link set lo up")

    def address(self, family: int) -> str:
        return self.ipv4 if family == 4 else self.ipv6

    def ip(self, *lines: str) -> None:
        """Run ``ip`` commands (batch syntax) in this namespace."""
        run("ip", "-n", self.netns, "-batch", "-", stdin="\n".join(lines) + "\n")

    def run(self, *cmd: str, stdin: str | None = None) -> str:
        return run("ip", "netns", "exec", self.netns, *cmd, stdin=stdin)

    def sysctl(self, path: str, value: str | int) -> None:
        """Write ``/proc/sys/<path>`` (e.g. ``net/netfilter/nf_conntrack_acct``) of this namespace."""
        self._pool.submit(Path(f"/proc/sys/{path}").write_text, f"{value}\n").result()

    def read_sysctl(self, path: str) -> str:
        return self._pool.submit(Path(f"/proc/sys/{path}").read_text).result().strip()

    def socket(self, family: int, kind: int) -> socket.socket:
        """A socket created inside this namespace (it stays there whichever thread uses it)."""
        return self._pool.submit(socket.socket, family, kind).result()

    def server(self, proto: str = "tcp", *, family: int = 4, port: int = 0) -> Server:
        srv = Server(self.socket, proto=proto, family=family, address=self.address(family), port=port)
        self.lab.closers.append(srv.close)
        return srv

    def tcp_connect(self, server: Server, *, dst: str = "", dport: int = 0) -> TcpClient:
        client = TcpClient(self.socket, server, dst=dst, dport=dport)
        self.lab.closers.append(client.sock.close)
        return client

    def udp_client(self, server: Server, *, dst: str = "", dport: int = 0) -> UdpClient:
        client = UdpClient(self.socket, server, dst=dst, dport=dport)
        self.lab.closers.append(client.sock.close)
        return client

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Node(Host):
    """A router namespace with conntrack: the observer the agent reads."""

    def __init__(self, lab: Owner, name: str, *, index: int, zone: str, masquerade: bool) -> None:
        super().__init__(lab, name, ipv4=f"10.0.0.{index}", ipv6=f"fd00::{index:x}")
        self.index, self.zone, self.pods = index, zone, list[Pod]()
        self.pod_cidr4, self.pod_cidr6 = f"10.{index}.0.0/16", f"fd00:1:{index:x}::/64"
        for path, value in (
            ("net/ipv4/ip_forward", 1),
            ("net/ipv6/conf/all/forwarding", 1),
            ("net/netfilter/nf_conntrack_acct", 1),
            ("net/netfilter/nf_conntrack_events", 1),
        ):
            self.sysctl(path, value)
        self.ip(
            f"link add fab0 type veth peer name n{index} netns {lab.fabric}",
            f"addr add {self.ipv4}/16 dev fab0",
            f"addr add {self.ipv6}/64 dev fab0 nodad",
            "link set fab0 up",
        )
        run("ip", "-n", lab.fabric, "link", "set", f"n{index}", "master", "br0", "up")
        self.nft(_ruleset(self, masquerade=masquerade))

    def nft(self, text: str) -> None:
        self.run("nft", "-f", "-", stdin=text)

    def conntrack_table(self) -> list[CtEntry]:
        """The kernel's table of this node, read with conntrack-tools."""
        return list_table(self.netns)

    def find(self, flow: Flow, table: list[CtEntry] | None = None) -> CtEntry:
        """The table entry whose original tuple is the client's flow."""
        entries = [e for e in (table if table is not None else self.conntrack_table()) if _matches(e, flow)]
        if len(entries) != 1:
            raise LookupError(f"{len(entries)} entries for {flow} in {self.netns}")
        return entries[0]

    def destroy_watch(self) -> DestroyWatch:
        """Start ``conntrack -E -e DESTROY`` here (before the traffic it should see)."""
        watch = DestroyWatch(self.netns)
        self.lab.closers.append(watch.close)
        return watch

    def delete_flow(self, flow: Flow) -> None:
        """Delete the flow's entry from the kernel table (a DESTROY event with final counters follows)."""
        self.run(
            "conntrack", "-D", "-f", "ipv4" if flow.family == 4 else "ipv6", "-p", flow.proto,
            "-s", flow.src, "-d", flow.dst, "--sport", str(flow.sport), "--dport", str(flow.dport),
        )  # fmt: skip


class Pod(Host):
    """A pod: a namespace behind its node, default route via the node."""

    def __init__(self, lab: Owner, name: str, *, node: Node, index: int) -> None:
        super().__init__(
            lab, name, ipv4=f"10.{node.index}.0.{index}", ipv6=f"fd00:1:{node.index:x}::{index:x}"
        )
        self.node, self.veth = node, f"v{index}"
        node.ip(
            f"link add {self.veth} type veth peer name eth0 netns {self.netns}",
            f"addr add 169.254.1.1/32 dev {self.veth}",
            f"addr add fe80::1/64 dev {self.veth} nodad",
            f"link set {self.veth} up",
            f"route add {self.ipv4}/32 dev {self.veth} src {node.ipv4}",
            f"route add {self.ipv6}/128 dev {self.veth} src {node.ipv6}",
        )
        self.ip(
            f"addr add {self.ipv4}/32 dev eth0",
            f"addr add {self.ipv6}/128 dev eth0 nodad",
            "link set eth0 up",
            "route add 169.254.1.1/32 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
            "route add default via fe80::1 dev eth0",
        )


def _matches(entry: CtEntry, flow: Flow) -> bool:
    return entry.proto == flow.proto and entry.orig == (
        str(ipaddress.ip_address(flow.src)),
        str(ipaddress.ip_address(flow.dst)),
        flow.sport,
        flow.dport,
    )


def _ruleset(node: Node, *, masquerade: bool) -> str:
    track = "ct state new,established,related counter accept"
    rules = f"""
table inet kubenetmon_lab {{
    chain raw_pre {{ type filter hook prerouting priority raw; }}
    chain raw_out {{ type filter hook output priority raw; }}
    chain marks {{ type filter hook forward priority mangle; }}
    chain trk_fwd {{ type filter hook forward priority filter; {track}; }}
    chain trk_in {{ type filter hook input priority filter; {track}; }}
    chain trk_out {{ type filter hook output priority filter; {track}; }}
}}
table ip kubenetmon_lab_nat {{
    chain nat_pre {{ type nat hook prerouting priority dstnat; }}
    chain nat_out {{ type nat hook output priority -100; }}
    chain nat_post {{ type nat hook postrouting priority srcnat; }}
}}
table ip6 kubenetmon_lab_nat {{
    chain nat_pre {{ type nat hook prerouting priority dstnat; }}
    chain nat_out {{ type nat hook output priority -100; }}
    chain nat_post {{ type nat hook postrouting priority srcnat; }}
}}
"""
    if masquerade:
        rules += (
            f'add rule ip kubenetmon_lab_nat nat_post oifname "fab0" ip saddr {node.pod_cidr4} '
            "ip daddr != 10.1.0.0-10.255.255.255 masquerade\n"
            f'add rule ip6 kubenetmon_lab_nat nat_post oifname "fab0" ip6 saddr {node.pod_cidr6} '
            "ip6 daddr != fd00:1::/32 masquerade\n"
        )
    return rules
