"""``kubenetmon up`` as a real process: it starts, rows appear while it runs, it stops in order and
stores every byte its agent saw, it leaves nothing behind, and it says clearly what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli.lab import demo
from tests.fixtures.lab import NETNS_DIR, Host, Lab, Node
from tests.support.up import Up, alive, kubenetmon, sql
from tests.support.waiting import wait_until

pytestmark = pytest.mark.netns

OUTSIDE4, OUTSIDE6 = "203.0.113.10", "2001:db8::10"


def _pod(
    host: Host, *, node: Node, app: str, owner: tuple[str, str], labels: dict[str, str]
) -> dict[str, Any]:
    kind, name = owner
    return {
        "kind": "Pod",
        "metadata": {
            "name": host.name,
            "namespace": "shop",
            "uid": f"uid-{host.name}",
            "labels": {"app": app, **labels},
            "ownerReferences": [{"kind": kind, "name": name, "controller": True}],
        },
        "spec": {"nodeName": node.name},
        "status": {"phase": "Running", "podIPs": [{"ip": host.ipv4}, {"ip": host.ipv6}]},
    }


def _inventory(path: Path, node: Node, pods: list[dict[str, Any]]) -> Path:
    node_obj = {
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"topology.kubernetes.io/zone": node.zone}},
        "status": {"addresses": [{"type": "InternalIP", "address": node.ipv4}]},
    }
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [node_obj, *pods]}))
    return path


def test_up_meters_a_namespace_and_stores_every_byte(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("node-a", zone="zone-a")
    web, db = lab.pod("web-1", node=node), lab.pod("db-0", node=node)
    outside = lab.external("outside", ipv4=OUTSIDE4, ipv6=OUTSIDE6)
    inventory = _inventory(
        tmp_path / "inventory.json",
        node,
        [
            _pod(
                web,
                node=node,
                app="web",
                owner=("ReplicaSet", "web-5d9c7"),
                labels={"pod-template-hash": "5d9c7"},
            ),
            _pod(db, node=node, app="db", owner=("StatefulSet", "db"), labels={}),
        ],
    )
    data = tmp_path / "data"
    up = Up(
        "--data-dir",
        str(data),
        "--netns",
        node.netns,
        "--node-name",
        node.name,
        "--inventory",
        str(inventory),
        "--interval",
        "2",
    )
    try:
        up.wait_for_line("ready: metering node node-a")
        tcp = web.tcp_connect(db.server("tcp", family=4))
        udp6 = web.udp_client(outside.server("udp", family=6))
        tcp.exchange(5000, 20_000)
        udp6.exchange(300, 2400)

        # rows appear while it runs, read through the writer (it owns the directory)
        def stored() -> bool:
            rows = sql(data, "SELECT count() AS n FROM network_flows_0_exact WHERE localPod = 'web-1'")
            return int(rows[0]["n"]) >= 4

        wait_until(stored, timeout=60, what="rows of web-1 in the flows table", step=0.5)
        top = kubenetmon("top", "--data-dir", str(data), "--by", "pod", "--format", "json")
        assert top.returncode == 0, top.stderr
        peers = {(r["local"], r["peer"], r["class"]) for r in json.loads(top.stdout)["rows"]}
        assert ("shop/web-1", "shop/db-0", "INTRA_VPC") in peers
        assert ("shop/web-1", OUTSIDE6, "PUBLIC_INTERNET") in peers

        # more traffic right before the stop: the agent's last, partial interval must be stored too
        tcp.exchange(700, 9000)
        udp6.exchange(100, 1200)
        running = up.processes()
        assert len(running) >= 5, up.output  # nats, writer (+worker), enricher (+worker), agent, view
        assert up.stop() == 0, up.output
        assert not alive(running), up.output
        assert any("kubenetmon top --data-dir" in line for line in up.err), up.output
    finally:
        up.kill_all()

    table = {e.orig: e for e in node.conntrack_table()}
    kernel = {"tcp": table[tcp.flow.orig], "udp": table[udp6.flow.orig]}
    rows = sql(
        data,
        "SELECT lower(proto) AS proto, direction, remotePod, toString(connectionClass) AS class, "
        "sum(bytes) AS bytes, sum(packets) AS packets FROM network_flows_0_exact WHERE localPod = 'web-1' "
        "GROUP BY proto, direction, remotePod, class ORDER BY proto, direction",
    )
    got = {(r["proto"], r["direction"]): (r["bytes"], r["packets"], r["remotePod"], r["class"]) for r in rows}
    assert got == {
        ("tcp", "in"): (kernel["tcp"].reply_bytes, kernel["tcp"].reply_packets, "db-0", "INTRA_VPC"),
        ("tcp", "out"): (kernel["tcp"].orig_bytes, kernel["tcp"].orig_packets, "db-0", "INTRA_VPC"),
        ("udp", "in"): (kernel["udp"].reply_bytes, kernel["udp"].reply_packets, "", "PUBLIC_INTERNET"),
        ("udp", "out"): (kernel["udp"].orig_bytes, kernel["udp"].orig_packets, "", "PUBLIC_INTERNET"),
    }
    after = kubenetmon("top", "--data-dir", str(data), "--by", "app")
    assert after.returncode == 0, after.stderr
    assert "web" in after.stdout and "db" in after.stdout and "PUBLIC_INTERNET" in after.stdout


def test_a_lone_machine_is_metered_as_one_pod_and_a_killed_up_leaves_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    machine = lab.node("laptop")  # stands for this machine: a namespace with its own addresses
    outside = lab.external("outside", ipv4=OUTSIDE4, ipv6=OUTSIDE6)
    data = tmp_path / "data"
    up = Up("--data-dir", str(data), "--netns", machine.netns, "--interval", "2")
    try:
        up.wait_for_line("ready: metering node")
        inventory = json.loads((data / "inventory.json").read_text())
        assert {ip["ip"] for ip in inventory["items"][1]["status"]["podIPs"]} >= {machine.ipv4, machine.ipv6}
        machine.tcp_connect(outside.server("tcp", family=6)).exchange(3000, 30_000)

        def attributed() -> bool:
            rows = sql(
                data,
                "SELECT direction, sum(bytes) AS bytes FROM network_flows_0_exact "
                f"WHERE localNamespace = 'host' AND toString(remoteIP) = '{OUTSIDE6}' "
                "AND connectionClass = 'PUBLIC_INTERNET' GROUP BY direction",
            )
            return {r["direction"] for r in rows if r["bytes"] > 3000} == {"out", "in"}

        wait_until(attributed, timeout=60, what="the machine's traffic, attributed and classed", step=0.5)
        running = up.processes()
        assert len(running) >= 5, up.output
        up.proc.kill()  # no chance to stop anything: the kernel tells each child (PR_SET_PDEATHSIG)
        up.proc.wait()
        wait_until(lambda: not alive(running), timeout=60, what="every child of a killed up to exit")
    finally:
        up.kill_all()


def _lab_namespaces(tag_prefix: str) -> set[str]:
    return (
        {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(tag_prefix)}
        if NETNS_DIR.is_dir()
        else set()
    )


def test_demo_shows_pods_apps_directions_and_classes_then_removes_the_lab(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = Up("--demo", "--data-dir", str(data), "--interval", "2")
    try:
        up.wait_for_line("ready: metering the demo lab")
        lab_pids = [pid for pid, _ in up.processes() if "kubenetmon.cli.lab.demo" in _cmdline(pid)]
        assert len(lab_pids) == 1, up.output
        namespaces = _lab_namespaces(f"{demo.PREFIX}{lab_pids[0]}-")
        assert len(namespaces) == 9, namespaces  # fabric, 2 nodes, 4 pods, 2 outside hosts
        query = (
            "SELECT DISTINCT localApp AS local, localWorkloadKind AS kind, "
            "if(remotePod != '', remoteApp, toString(remoteIP)) AS peer, direction, proto, "
            "ipFamily AS family, toString(connectionClass) AS class, remoteCloudService AS service, "
            "remoteService AS svc, crossZone FROM network_flows_0_exact"
        )
        seen: list[dict[str, Any]] = []

        def everything_seen() -> bool:
            seen[:] = sql(data, query)
            flows = {(r["local"], r["peer"], r["class"], r["direction"]) for r in seen}
            return {
                ("frontend", "api", "INTRA_VPC", "out"),
                ("api", "frontend", "INTRA_VPC", "out"),
                ("api", "db", "INTRA_VPC", "out"),
                ("frontend", "cache", "INTRA_VPC", "in"),
                ("db", "2001:db8:5::20", "INTRA_REGION", "out"),
                ("api", "::ffff:203.0.113.10", "PUBLIC_INTERNET", "out"),
                ("cache", "2001:db8::10", "PUBLIC_INTERNET", "in"),
                ("db", "cache", "INTRA_VPC", "out"),
            } <= flows

        wait_until(everything_seen, timeout=90, what="every kind of demo flow in the table", step=1.0)
        assert {r["kind"] for r in seen} == {"Deployment", "StatefulSet"}
        assert {(r["proto"], r["family"]) for r in seen} >= {("TCP", 4), ("TCP", 6), ("UDP", 6)}
        assert any(r["service"] == "s3" and r["class"] == "INTRA_REGION" for r in seen)
        assert any(r["svc"] == "shop/api" and r["local"] == "frontend" for r in seen)
        assert any(r["crossZone"] for r in seen) and not all(r["crossZone"] for r in seen)
        running = up.processes()
        assert up.stop() == 0, up.output
        assert not alive(running), up.output
        assert not _lab_namespaces(f"{demo.PREFIX}{lab_pids[0]}-")
    finally:
        up.kill_all()
    assert any("api" in line and "frontend" in line and "cross-zone" in line for line in up.out), up.output
    after = kubenetmon("top", "--data-dir", str(data), "--by", "class", "--format", "csv")
    assert after.returncode == 0, after.stderr
    assert {"INTRA_VPC", "INTRA_REGION", "PUBLIC_INTERNET"} <= {
        line.split(",")[2] for line in after.stdout.splitlines()[1:]
    }
    # the demo is AWS us-east-1: cross-zone bytes cost $0.01/GiB on each side, S3 in the region is free
    cost = kubenetmon("cost", "--data-dir", str(data), "--by", "class", "--format", "json")
    assert cost.returncode == 0, cost.stderr
    by_charge = {r["key"]: r for r in json.loads(cost.stdout)["rows"]}
    (crossing,) = sql(data, "SELECT sum(bytes) AS b FROM network_flows_0_exact WHERE crossZone")
    assert crossing["b"] > 0
    assert by_charge["cross-zone"]["cost_usd"] == pytest.approx(crossing["b"] / 2**30 * 0.01, rel=1e-3)
    assert by_charge["intra-region"]["cost_usd"] == 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
