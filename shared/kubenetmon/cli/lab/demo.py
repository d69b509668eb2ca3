"""``kubenetmon up --demo``: a small cluster made of network namespaces, with steady traffic, as a child.

Two nodes in two zones, four pods with app labels and Deployment/StatefulSet owners, a ClusterIP-like
Service (DNAT on every node), a host on the internet (203.0.113.10, 2001:db8::10: documentation
addresses, ``PUBLIC_INTERNET``) and a "cloud service" host (198.51.100.20, 2001:db8:5::20) that a custom
range file names ``aws s3`` in the local region. Pods reach the outside through their node's masquerade,
as in a real cluster. Traffic: TCP and UDP, IPv4 and IPv6, pod to pod on one node, across nodes and zones,
through the Service, to the internet and to the cloud service, every second until stopped.

Run as ``python -m kubenetmon.cli.lab.demo --out DIR``: it builds the lab, writes ``DIR/inventory.json``
(a Kubernetes List) and ``DIR/ranges.json``, prints one JSON line saying where the agents must read, then
generates traffic until SIGTERM or SIGINT, and removes every namespace it made before it exits.
Everything stays inside the lab's namespaces; nothing is configured on the host.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kubenetmon.cli.lab.network import Host, Lab, Node, Pod, sweep
from kubenetmon.cli.lab.traffic import Server
from kubenetmon.shared.errors import ConfigError

PREFIX: Final = "kd"
CLOUD: Final = ("aws", "us-east-1")
ZONES: Final = ("us-east-1a", "us-east-1b")
INTERNET: Final = ("203.0.113.10", "2001:db8::10")
S3: Final = ("198.51.100.20", "2001:db8:5::20")
SERVICE_VIP: Final = "10.96.0.10"
TICK_S: Final = 1.0


@dataclass(frozen=True)
class PodSpec:
    name: str
    node: int
    app: str
    kind: str
    workload: str
    namespace: str = "shop"


PODS: Final = (
    PodSpec("frontend-7d4b9c8f5d-x2k4p", 0, "frontend", "Deployment", "frontend"),
    PodSpec("cache-0", 0, "cache", "StatefulSet", "cache"),
    PodSpec("api-5f6d8b7c9-q9z7m", 1, "api", "Deployment", "api"),
    PodSpec("db-0", 1, "db", "StatefulSet", "db"),
)


def command(out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kubenetmon.cli.lab.demo", "--out", str(out_dir)]


def check() -> None:
    """The demo needs the ``ip`` and ``nft`` commands (and root, checked by ``up``)."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"--demo needs the {' and '.join(missing)} command(s) (packages iproute2, nftables): install them"
        )


# ---------------------------------------------------------------------------------------- metadata


def _owner(spec: PodSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """ownerReferences entry and extra labels, as the controllers would set them."""
    if spec.kind == "Deployment":
        replicaset, _, _ = spec.name.rpartition("-")  # <deployment>-<pod-template-hash>-<suffix>
        template_hash = replicaset.rpartition("-")[2]
        return {"kind": "ReplicaSet", "name": replicaset, "controller": True}, {
            "pod-template-hash": template_hash
        }
    return {"kind": spec.kind, "name": spec.workload, "controller": True}, {}


def pod_object(spec: PodSpec, *, host: Host, node: Node) -> dict[str, Any]:
    owner, labels = _owner(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "uid": f"demo-{spec.name}",
            "labels": {"app.kubernetes.io/name": spec.app, **labels},
            "ownerReferences": [owner],
        },
        "spec": {"nodeName": node.name},
        "status": {"phase": "Running", "podIP": host.ipv4, "podIPs": [{"ip": host.ipv4}, {"ip": host.ipv6}]},
    }


def node_object(node: Node) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"topology.kubernetes.io/zone": node.zone}},
        "spec": {"providerID": f"aws:///{node.zone}/i-demo{node.index:04d}"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ipv4},
                {"type": "InternalIP", "address": node.ipv6},
            ]
        },
    }


def service_object(name: str, *, vip: str, port: int, target: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": vip, "clusterIPs": [vip], "ports": [{"port": port, "targetPort": target}]},
    }


def ranges_document() -> list[dict[str, str]]:
    """The custom range file: the cloud-service host's prefixes are ``aws s3`` in the local region."""
    cloud, region = CLOUD
    return [
        {"cidr": "198.51.100.0/24", "cloud": cloud, "region": region, "service": "s3"},
        {"cidr": "2001:db8:5::/48", "cloud": cloud, "region": region, "service": "s3"},
    ]


# ------------------------------------------------------------------------------------------ the lab


@dataclass
class Demo:
    lab: Lab
    nodes: list[Node]
    pods: dict[str, Pod]
    objects: list[dict[str, Any]]
    exchanges: list[Callable[[], None]]


def build(lab: Lab) -> Demo:
    nodes = [lab.node(f"node-{'ab'[i]}", zone=ZONES[i], masquerade=True) for i in range(2)]
    pods = {spec.app: lab.pod(spec.name, node=nodes[spec.node]) for spec in PODS}
    internet = lab.external("internet", ipv4=INTERNET[0], ipv6=INTERNET[1])
    s3 = lab.external("s3", ipv4=S3[0], ipv6=S3[1])
    api = pods["api"].server("tcp", family=4, port=8080)
    lab.service(SERVICE_VIP, 80, backend=pods["api"], backend_port=api.port)
    objects = [node_object(n) for n in nodes]
    objects += [pod_object(s, host=pods[s.app], node=nodes[s.node]) for s in PODS]
    objects.append(service_object("api", vip=SERVICE_VIP, port=80, target=api.port))
    servers: dict[str, Server] = {
        "cache-udp6": pods["cache"].server("udp", family=6, port=6379),
        "cache-tcp4": pods["cache"].server("tcp", family=4, port=6379),
        "db-tcp6": pods["db"].server("tcp", family=6, port=5432),
        "internet-tcp4": internet.server("tcp", family=4, port=443),
        "internet-udp6": internet.server("udp", family=6, port=123),
        "s3-tcp6": s3.server("tcp", family=6, port=443),
    }
    frontend, cache, apipod, db = (pods[a] for a in ("frontend", "cache", "api", "db"))
    plan = [  # (client, (up, down) bytes per tick)
        (frontend.tcp_connect(api, dst=SERVICE_VIP, dport=80), (2000, 30_000)),  # via the Service, cross-zone
        (frontend.udp_client(servers["cache-udp6"]), (300, 2400)),  # same node, UDP, IPv6
        (apipod.tcp_connect(servers["db-tcp6"]), (1500, 12_000)),  # same node, IPv6
        (apipod.tcp_connect(servers["internet-tcp4"]), (800, 6000)),  # the internet
        (db.tcp_connect(servers["s3-tcp6"]), (20_000, 500)),  # a cloud service, IPv6
        (cache.udp_client(servers["internet-udp6"]), (100, 100)),  # the internet, UDP, IPv6
        (db.tcp_connect(servers["cache-tcp4"]), (700, 4000)),  # across nodes and zones
    ]
    exchanges = [_exchange(client, up, down) for client, (up, down) in plan]
    return Demo(lab=lab, nodes=nodes, pods=pods, objects=objects, exchanges=exchanges)


def _exchange(client: Any, up: int, down: int) -> Callable[[], None]:
    def once() -> None:
        jitter = random.uniform(0.5, 1.5)
        client.exchange(max(int(up * jitter), 8), int(down * jitter))

    return once


def generate(demo: Demo, stop: threading.Event) -> None:
    """Every flow exchanges some bytes each tick, until ``stop``; a failing flow is skipped, not fatal."""
    failed: set[int] = set()
    while not stop.wait(TICK_S):
        for i, exchange in enumerate(demo.exchanges):
            if i in failed:
                continue
            try:
                exchange()
            except OSError as exc:
                failed.add(i)
                print(f"demo: flow {i} stopped: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubenetmon-demo-lab")
    parser.add_argument("--out", required=True, help="directory for inventory.json and ranges.json")
    out = Path(parser.parse_args(argv).out)
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # received by sigwait below, never by a handler
    sweep(PREFIX, only_dead=True)
    lab = Lab(prefix=PREFIX)
    stop = threading.Event()
    try:
        demo = build(lab)
        out.mkdir(parents=True, exist_ok=True)
        inventory, ranges = out / "inventory.json", out / "ranges.json"
        inventory.write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": demo.objects}, indent=1)
        )
        ranges.write_text(json.dumps(ranges_document(), indent=1))
        ready = {
            "agents": [{"node": n.name, "netns": n.netns} for n in demo.nodes],
            "inventory": str(inventory),
            "enricher_args": ["--cloud", CLOUD[0], "--region", CLOUD[1], "--custom-ranges", str(ranges)],
            "summary": f"{len(demo.nodes)} nodes in 2 zones, {len(PODS)} pods, a Service, "
            "the internet and a cloud service",
        }
        print(json.dumps(ready), flush=True)
        traffic = threading.Thread(target=generate, args=(demo, stop), name="demo-traffic", daemon=True)
        traffic.start()
        signal.sigwait(signals)
        stop.set()
        traffic.join(timeout=10)
        return 0
    finally:
        stop.set()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
