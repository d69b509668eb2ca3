"""The opt-in agent components ``dns-names`` and ``socket-owners``: rendered on each overlay, alone, together
and with ``node-sysctls``, the agent gets exactly its flags, capabilities and mounts and nothing else
changes; and, against the real kernel, the capabilities each component adds are what its feature needs:
with them it works, with any one of them taken away it does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy import invocation
from tests.deploy.render import K8S, command_line, kubectl, name, named, pod_spec, render
from tests.deploy.test_kustomize import KUBERNETES_VERSION

BASE_CAPS = ["NET_ADMIN"]
ADDS: dict[str, dict[str, Any]] = {
    "dns-names": {"caps": ["NET_RAW"], "args": ["--dns-names"], "mounts": {}},
    "socket-owners": {
        "caps": ["DAC_READ_SEARCH", "SYS_PTRACE"],
        "args": ["--socket-owners", "--proc-root=/host/proc"],
        "mounts": {"/host/proc": "/proc"},
    },
}
COMBINATIONS = [
    ("dns-names",),
    ("socket-owners",),
    ("dns-names", "socket-owners"),
    ("socket-owners", "dns-names", "node-sysctls"),
]


def render_with(tmp_path: Path, overlay: str, components: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(K8S / "components" / c, tmp_path) for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def agent_container(objects: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    agent_set = named(objects, "DaemonSet", "kubenetmon-agent")
    (agent,) = pod_spec(agent_set)["containers"]
    assert agent["name"] == "agent"
    return agent_set, agent


def host_mounts(agent_set: dict[str, Any], agent: dict[str, Any]) -> dict[str, str]:
    """Mount path -> host path, for the agent container's hostPath volumes."""
    host = {v["name"]: v["hostPath"]["path"] for v in pod_spec(agent_set)["volumes"] if "hostPath" in v}
    return {m["mountPath"]: host[m["name"]] for m in agent["volumeMounts"] if m["name"] in host}


@pytest.mark.parametrize("overlay", ["dev", "production"])
@pytest.mark.parametrize("components", COMBINATIONS, ids="+".join)
def test_the_agent_gets_exactly_what_the_components_add(
    tmp_path: Path, overlay: str, components: tuple[str, ...]
) -> None:
    objects = render_with(tmp_path, overlay, components)
    plain = render(f"overlays/{overlay}")
    agent_set, agent = agent_container(objects)
    kubernetes_validate.validate(agent_set, KUBERNETES_VERSION, strict=True)
    _, plain_agent = agent_container(plain)
    ours = [c for c in components if c in ADDS]

    caps = agent["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(caps["add"]) == sorted(BASE_CAPS + [cap for c in ours for cap in ADDS[c]["caps"]])
    assert agent["securityContext"]["privileged"] is False
    assert agent["securityContext"]["allowPrivilegeEscalation"] is False
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    spec = pod_spec(agent_set)
    assert not spec.get("hostPID") and not spec.get("hostIPC"), "the host's processes are read through /proc"

    added_args = [a for a in agent["args"] if a not in plain_agent["args"]]
    assert sorted(added_args) == sorted(a for c in ours for a in ADDS[c]["args"])
    assert agent["args"][: len(plain_agent["args"])] == plain_agent["args"]
    mounts = host_mounts(agent_set, agent)
    assert mounts == {
        "/run/kubenetmon": "/run/kubenetmon",
        **{k: v for c in ours for k, v in ADDS[c]["mounts"].items()},
    }
    for mount in agent["volumeMounts"]:
        if mount["mountPath"] == "/host/proc":
            assert mount["readOnly"] is True

    # the real parser and settings validation: the flags mean what the components say
    argv, env = command_line(objects, agent)
    _, built = invocation.check(argv, env)
    settings = (
        invocation.setting(built, "AgentSettings", "dns_names"),
        invocation.setting(built, "AgentSettings", "socket_owners"),
    )
    assert settings == ("dns-names" in components, "socket-owners" in components)
    proc_root = invocation.setting(built, "AgentSettings", "proc_root")
    assert proc_root == ("/host/proc" if "socket-owners" in components else "/proc")

    # nothing but the agent DaemonSet changes
    others = [o for o in objects if not (o["kind"] == "DaemonSet" and name(o) == "kubenetmon-agent")]
    plain_others = [o for o in plain if not (o["kind"] == "DaemonSet" and name(o) == "kubenetmon-agent")]
    assert others == plain_others


def test_the_components_are_opt_in() -> None:
    for overlay in (K8S / "overlays").glob("*/kustomization.yaml"):
        text = overlay.read_text()
        assert "dns-names" not in text and "socket-owners" not in text, overlay


def test_a_moved_agent_container_fails_the_render(tmp_path: Path) -> None:
    """The patches append by position: they refuse to patch a DaemonSet whose first container is not the
    agent (an overlay that put a sidecar first) rather than give the sidecar the capabilities."""
    base = tmp_path / "base"
    base.mkdir()
    agent_set = named(render("overlays/dev"), "DaemonSet", "kubenetmon-agent")
    spec = pod_spec(agent_set)
    spec["containers"] = [{"name": "sidecar", "image": "busybox:1.36"}, *spec["containers"]]
    (base / "daemonset.yaml").write_text(yaml.safe_dump(agent_set))
    for component in ADDS:
        (base / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": ["daemonset.yaml"],
                    "components": [os.path.relpath(K8S / "components" / component, base)],
                }
            )
        )
        out = subprocess.run([kubectl(), "kustomize", str(base)], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0, component
        assert "test" in out.stderr.lower(), out.stderr


# -- the capabilities, against the real kernel ---------------------------------------------------------


def caps_of(components: tuple[str, ...], tmp_path: Path) -> list[str]:
    _, agent = agent_container(render_with(tmp_path, "dev", components))
    caps: list[str] = agent["securityContext"]["capabilities"]["add"]
    return caps


def as_agent(caps: list[str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by this interpreter as root with only ``caps`` (every other capability dropped from
    every set, no way to regain one), as the container runtime starts the agent."""
    wanted = ",".join(f"+{c.lower()}" for c in caps)
    return subprocess.run(
        ["setpriv", f"--inh-caps=-all,{wanted}", f"--ambient-caps=-all,{wanted}",
         f"--bounding-set=-all,{wanted}", "--no-new-privs", sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)

OPEN_DNS_SOCKET = """
from kubenetmon.agent.dnswatch import open_socket
open_socket(None).close()
print("opened")
"""


@pytest.mark.netns
@needs_root
def test_dns_names_needs_net_raw_and_nothing_more(tmp_path: Path) -> None:
    caps = caps_of(("dns-names",), tmp_path)
    assert as_agent(caps, OPEN_DNS_SOCKET).stdout.strip() == "opened"
    without = [c for c in caps if c != "NET_RAW"]
    out = as_agent(without, OPEN_DNS_SOCKET)
    assert out.returncode != 0 and "PermissionError" in out.stderr, out


FIND_OWNER = """
import sys
from kubenetmon.agent.owners import Sockets
sockets = Sockets(proc_root="/proc")
print(sockets.pids([int(sys.argv[1])]).get(int(sys.argv[1]), 0), sockets.uid_of(int(sys.argv[2])) or "-")
"""


@pytest.mark.netns
@needs_root
def test_socket_owners_needs_both_capabilities_and_nothing_more(tmp_path: Path) -> None:
    """A process of another user (nobody) holds a socket, as a hostNetwork pod's process would: with the
    component's capabilities the agent finds it from the socket's inode; without either one it cannot."""
    holder = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
         "print(s.fileno(), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        fd = int(holder.stdout.readline())
        inode = int(os.readlink(f"/proc/{holder.pid}/fd/{fd}").removeprefix("socket:[").removesuffix("]"))
        caps = caps_of(("socket-owners",), tmp_path)
        found = as_agent(caps, FIND_OWNER, str(inode), str(holder.pid))
        assert found.returncode == 0, found.stderr
        assert int(found.stdout.split()[0]) == holder.pid
        for missing in ADDS["socket-owners"]["caps"]:
            fewer = [c for c in caps if c != missing]
            out = as_agent(fewer, FIND_OWNER, str(inode), str(holder.pid))
            assert out.returncode == 0, out.stderr
            assert int(out.stdout.split()[0]) == 0, f"found without {missing}"
    finally:
        holder.kill()
        holder.wait()
