"""What ``kubenetmon up`` says when something is missing, and the metadata it makes for a lone machine."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from kubenetmon.cli.up import hostinventory, preflight
from kubenetmon.cli.up.children import child_environment
from kubenetmon.shared.errors import ConfigError
from tests.fixtures.lab import Lab
from tests.support.up import kubenetmon

ROOT_STATUS = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"
USER_STATUS = "Name:\tx\nCapEff:\t0000000000000000\n"


def test_privileges() -> None:
    preflight.check_privileges(status=ROOT_STATUS)
    with pytest.raises(
        ConfigError, match=r"needs root \(CAP_NET_ADMIN\): run it with sudo, e.g. `sudo kubenetmon up`"
    ):
        preflight.check_privileges(status=USER_STATUS)
    only_net_admin = f"CapEff:\t{1 << preflight.CAP_NET_ADMIN:016x}\n"
    preflight.check_privileges(status=only_net_admin)


def test_accounting_messages() -> None:
    preflight.check_accounting({preflight.ACCT: "1"}.__getitem__)
    with pytest.raises(ConfigError) as off:
        preflight.check_accounting({preflight.ACCT: "0"}.__getitem__)
    assert "`sudo sysctl -w net.netfilter.nf_conntrack_acct=1`" in str(off.value)
    assert "\n" not in str(off.value)
    with pytest.raises(ConfigError, match="modprobe nf_conntrack"):
        preflight.check_accounting(lambda path: "")


def test_busy_port_and_locked_data_dir(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            preflight.check_port(port)
    preflight.check_port(0)
    first = preflight.DataDirLock(tmp_path)
    first.acquire()
    try:
        done = kubenetmon("up", "--data-dir", str(tmp_path), "--demo")
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"kubenetmon up: {tmp_path} is in use by another `kubenetmon up` (pid {os.getpid()}): "
            "stop it first, or pass another --data-dir"
        )
    finally:
        first.release()


@pytest.mark.netns
def test_up_refuses_a_namespace_without_accounting(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("node-a")
    node.sysctl(preflight.ACCT, 0)  # per network namespace: the host's setting is not touched
    done = kubenetmon("up", "--data-dir", str(tmp_path), "--netns", node.netns)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(
        f"kubenetmon up: conntrack accounting is off in network namespace {node.netns} "
        "(net.netfilter.nf_conntrack_acct = 0)"
    )
    assert "sysctl -w net.netfilter.nf_conntrack_acct=1" in lines[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        node.sysctl(preflight.ACCT, 1)
        done = kubenetmon("up", "--data-dir", str(tmp_path), "--netns", node.netns, "--nats-port", port)
    assert done.returncode == 2 and done.stderr.startswith(
        f"kubenetmon up: port {port} on 127.0.0.1 is already"
    )
    assert not (tmp_path / "nats").exists()  # refused before starting anything


def test_children_get_no_kubenetmon_variables() -> None:
    env = child_environment({"PATH": "/bin", "KUBENETMON_NATS_URL": "nats://elsewhere:4222"})
    assert env == {"PATH": "/bin"}


def test_a_lone_machine_is_one_pod_on_an_addressless_node(tmp_path: Path) -> None:
    inventory = hostinventory.host_inventory(node="laptop", hostname="laptop", ips=["192.0.2.2", "fd00::2"])
    node, pod = inventory["items"]
    assert node["kind"] == "Node" and "addresses" not in node["status"]
    assert (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["spec"]["nodeName"]) == (
        "host",
        "laptop",
        "laptop",
    )
    path = tmp_path / "inventory.json"
    path.write_text(hostinventory.dump(inventory))
    records = [
        {"proto": "tcp", "family": 4, "zone": 0, "orig_src": "192.0.2.2", "orig_dst": "198.51.100.7",
         "orig_sport": 40000, "orig_dport": 443, "reply_src": "198.51.100.7", "reply_dst": "192.0.2.2",
         "reply_sport": 443, "reply_dport": 40000, "orig_packets": 3, "orig_bytes": 300,
         "reply_packets": 4, "reply_bytes": 4000},
        {"proto": "udp", "family": 6, "zone": 0, "orig_src": "fd00::9", "orig_dst": "fd00::2",
         "orig_sport": 5353, "orig_dport": 53, "reply_src": "fd00::2", "reply_dst": "fd00::9",
         "reply_sport": 53, "reply_dport": 5353, "orig_packets": 1, "orig_bytes": 80,
         "reply_packets": 1, "reply_bytes": 120},
    ]  # fmt: skip
    done = kubenetmon(
        "label",
        "--inventory",
        str(path),
        "--node",
        "laptop",
        input="\n".join(map(json.dumps, records)) + "\n",
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    got = [(r["direction"], r["localPod"], r["remotePod"], r["connectionClass"], r["bytes"]) for r in rows]
    assert got == [
        ("out", "laptop", "", "PUBLIC_INTERNET", 300),
        ("in", "laptop", "", "PUBLIC_INTERNET", 4000),
        ("out", "laptop", "", "INTRA_VPC", 120),  # to pod on node: the machine answered
        ("in", "laptop", "", "INTRA_VPC", 80),
    ]
