"""The pod owning a node socket, against the real kernel: a process in a pod's cgroup (cgroup v2, the
systemd driver's path with the pod UID) opens a socket in the node's namespace, as a hostNetwork pod
does, and sends known bytes to another node; the agent names the pod's UID for the row, and the node row
carries that pod."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenetmon.agent.owners import pod_uid
from kubenetmon.cli.lab.objects import node as node_object
from kubenetmon.cli.lab.objects import pod as pod_object
from kubenetmon.enricher import sources
from kubenetmon.enricher.connclass import LabelSettings
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.labeler import Labeler
from tests.fixtures.lab import Lab
from tests.support.agent_lab import Probe
from tests.support.builders import T0

pytestmark = pytest.mark.netns
UNIFIED = Path("/sys/fs/cgroup/unified")
UID = "4f1c9a2e-7b3d-4e5f-9a8b-0c1d2e3f4a5b"
CHILD = """
import socket, struct, sys
sys.stdin.readline()  # moved into the pod's cgroup
up, down = int(sys.argv[2]), int(sys.argv[3])
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(struct.pack("!II", up, down) + bytes(up))
got = 0
while got < down:
    got += len(s.recv(65536))
print(s.getsockname()[1], flush=True)
sys.stdin.readline()  # keep the socket open until the agent cut its report
"""


@pytest.fixture
def pod_cgroup() -> Iterator[Path]:
    """A leaf cgroup named like a pod's container under the systemd driver (cgroup v2)."""
    if not (UNIFIED / "cgroup.procs").exists():
        pytest.skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified")
    top = UNIFIED / f"kubenetmon-lab-{os.getpid()}-{secrets.token_hex(3)}"
    leaf = top / f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice" / "cri-containerd-0a1b.scope"
    leaf.mkdir(parents=True)
    try:
        yield leaf
    finally:
        for path in (leaf, leaf.parent, top):
            path.rmdir()


def test_the_socket_owner_is_named_on_the_node_row(lab: Lab, tmp_path: Path, pod_cgroup: Path) -> None:
    n1, n2 = lab.node("n1", zone="az-a"), lab.node("n2", zone="az-b")
    server = n2.server("tcp")
    probe = Probe(n1, tmp_path / "state", owners=True)
    child = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            n1.netns,
            sys.executable,
            "-c",
            CHILD,
            f"{n2.ipv4}:{server.port}",
            "40000",
            "400000",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        (pod_cgroup / "cgroup.procs").write_text(str(child.pid))
        assert pod_uid(Path(f"/proc/{child.pid}/cgroup").read_text()) == UID
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        sport = int(child.stdout.readline())
        probe.cut()  # the socket is still open: its owner can be found
        child.stdin.write("close\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        probe.close()
    messages = probe.messages()
    owned = [(m.rows[i], uid) for m in messages for i, uid in (m.owners or {}).items()]
    assert [(row.orig_sport, uid) for row, uid in owned] == [(sport, UID)]
    (row, _) = owned[0]
    assert row.orig_bytes >= 40_000 and row.reply_bytes >= 400_000

    index = Index()
    index.replace(
        "nodes", [node_object("n1", n1.ipv4, zone="az-a"), node_object("n2", n2.ipv4, zone="az-b")], now=T0
    )
    hostnet = pod_object("ingress-7", n1.ipv4, node="n1", namespace="ingress", uid=UID, host_network=True,
                         labels={"app": "ingress"}, owner=("DaemonSet", "ingress"))  # fmt: skip
    index.replace("pods", [hostnet], now=0.0)
    index.replace("services", [], now=T0)
    settings = LabelSettings(cloud="aws", region="us-east-1", cluster="lab")
    labeler = Labeler(
        settings, index=index, ranges=sources.load_table(sources.RangeSettings(), private=settings.private)
    )
    found = []
    for msg in messages:
        nodes = labeler.label(msg, enriched_at=1).nodes
        if nodes:
            names, data = nodes
            found += [dict(zip(names, values, strict=True)) for values in zip(*data, strict=True)]
    mine = [r for r in found if r["localPort"] == sport]
    assert {
        (r["direction"], r["localPod"], r["localNamespace"], r["localApp"], r["localKind"]) for r in mine
    } == {
        ("out", "ingress-7", "ingress", "ingress", "node"),
        ("in", "ingress-7", "ingress", "ingress", "node"),
    }
    assert {r["direction"]: r["bytes"] for r in mine} == {"out": row.orig_bytes, "in": row.reply_bytes}
