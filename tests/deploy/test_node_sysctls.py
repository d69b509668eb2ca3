"""The opt-in ``node-sysctls`` component: a privileged init container in the agent DaemonSet sets the three
conntrack sysctls and exits, the agent container stays unprivileged; and its script, run for real in a
network namespace of its own, leaves all three at 1. The compose stack's one-shot service does the same.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.render import K8S, kubectl, named, pod_spec
from tests.deploy.test_kustomize import KUBERNETES_VERSION

ROOT = Path(__file__).resolve().parents[2]
SYSCTLS = ("nf_conntrack_acct", "nf_conntrack_events", "nf_conntrack_timestamp")


def render_with_component(tmp_path: Path, overlay: str) -> list[dict[str, Any]]:
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(K8S / "components" / "node-sysctls", tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_init_container_is_privileged_and_the_agent_is_not(tmp_path: Path, overlay: str) -> None:
    objects = render_with_component(tmp_path, overlay)
    agent_set = named(tuple(objects), "DaemonSet", "kubenetmon-agent")
    kubernetes_validate.validate(agent_set, KUBERNETES_VERSION, strict=True)
    spec = pod_spec(agent_set)
    assert spec["hostNetwork"] is True, "the init container writes the node's network namespace"
    (init,) = spec["initContainers"]
    assert init["name"] == "node-sysctls"
    assert init["securityContext"] == {"privileged": True, "readOnlyRootFilesystem": True}
    (agent,) = spec["containers"]
    assert init["image"].split(":")[0] == "kubenetmon"
    assert agent["securityContext"]["privileged"] is False
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    for other in objects:
        if other["kind"] in ("Deployment", "StatefulSet", "Job") and other is not agent_set:
            assert "initContainers" not in pod_spec(other) or all(
                not c.get("securityContext", {}).get("privileged") for c in pod_spec(other)["initContainers"]
            ), other["metadata"]["name"]


def test_the_component_is_opt_in() -> None:
    for overlay in (K8S / "overlays").glob("*/kustomization.yaml"):
        assert "node-sysctls" not in overlay.read_text(), overlay


def init_script() -> list[str]:
    patch = yaml.safe_load((K8S / "components/node-sysctls/daemonset-patch.yaml").read_text())
    (init,) = patch["spec"]["template"]["spec"]["initContainers"]
    command: list[str] = init["command"]
    return command


def compose_script() -> list[str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["node-sysctls"]
    command: list[str] = [*service["entrypoint"], *service["command"]]
    # compose's escape for a literal $; the service writes the host's directory where it is mounted
    return [
        part.replace("$$", "$").replace("/run/netfilter/", "/proc/sys/net/netfilter/") for part in command
    ]


@pytest.mark.netns
@pytest.mark.parametrize("script", [init_script, compose_script], ids=["kustomize", "compose"])
def test_the_script_sets_all_three_in_its_network_namespace(script: Any) -> None:
    """Run the command in a new network namespace (``unshare -n``): the host's own values are untouched."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    before = {name: Path(f"/proc/sys/net/netfilter/{name}").read_text() for name in SYSCTLS}
    check = "; ".join(f'printf "{name}=%s\\n" "$(cat /proc/sys/net/netfilter/{name})"' for name in SYSCTLS)
    command: list[str] = script()
    out = subprocess.run(
        ["unshare", "-n", "sh", "-ec", f'"$@"; {check}', "node-sysctls", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-3:] == [f"{name}=1" for name in SYSCTLS], out.stdout
    assert {name: Path(f"/proc/sys/net/netfilter/{name}").read_text() for name in SYSCTLS} == before
