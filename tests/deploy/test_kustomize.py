"""Every kustomize overlay renders, validates against the Kubernetes schemas, and keeps its promises:
pinned images, probes, locked-down security contexts, least-privilege RBAC and network policies, the
agent as the only host-network pod, worker counts from CPU limits, grace periods above the drain deadline.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from kubenetmon.shared import topology
from kubenetmon.shared.settings import NatsSettings
from tests.deploy import crds
from tests.deploy.render import (
    NAMESPACE,
    OVERLAYS,
    by_kind,
    component,
    containers,
    cpu_cores,
    is_kubenetmon_image,
    kubenetmon_containers,
    matches,
    name,
    named,
    pod_labels,
    pod_spec,
    render,
    workloads,
)

KUBERNETES_VERSION = "1.37"
TARGETS = ("base", *(f"overlays/{o}" for o in OVERLAYS))
ROLES = ("agent", "auth", "enricher", "metadata", "writer", "init")
POOLS = ("enricher", "writer")
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}

pytestmark = pytest.mark.parametrize("target", TARGETS)


def test_expected_overlays_exist(target: str) -> None:
    assert {"dev", "production", "dev-keda", "production-nats-cluster"} <= set(OVERLAYS)


def test_every_object_validates_against_the_schemas(target: str) -> None:
    objects = render(target)
    assert objects
    for obj in objects:
        ident = f"{obj['kind']}/{name(obj)}"
        if crds.is_custom(obj):
            crds.validate(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{target}: {ident} invalid at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{target}: {ident}: {exc.message}")


def test_namespaced_objects_live_in_the_kubenetmon_namespace(target: str) -> None:
    for obj in render(target):
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], name(obj)
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{name(obj)}"


def test_object_names_are_unique(target: str) -> None:
    keys = [(o["kind"], name(o)) for o in render(target)]
    assert len(keys) == len(set(keys))


def test_images_are_pinned(target: str) -> None:
    objects = render(target)
    for obj in workloads(objects):
        for c in containers(obj):
            image = c["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, f"{name(obj)}/{c['name']}: {image} has no tag"
            assert tag != "latest", f"{name(obj)}/{c['name']}: {image}"
            assert c.get("imagePullPolicy") == "IfNotPresent", f"{name(obj)}/{c['name']}"
    images = {c["image"] for _, c in kubenetmon_containers(objects)}
    expected = {
        "base": {"kubenetmon:0.1.0"},
        "overlays/dev": {"kubenetmon:dev"},
        "overlays/dev-keda": {"kubenetmon:dev"},
        "overlays/production": {"registry.example.com/kubenetmon/kubenetmon:0.1.0"},
        "overlays/production-nats-cluster": {"registry.example.com/kubenetmon/kubenetmon:0.1.0"},
    }
    assert images == expected.get(target, images) and len(images) == 1


def test_one_kubenetmon_workload_per_role(target: str) -> None:
    objects = render(target)
    roles = {component(o): o["kind"] for o, _ in kubenetmon_containers(objects)}
    assert roles == {
        "agent": "DaemonSet",
        "auth": "Deployment",
        "enricher": "Deployment",
        "metadata": "Deployment",
        "writer": "Deployment",
        "init": "Job",
    }


def test_long_running_containers_have_probes(target: str) -> None:
    for obj in workloads(render(target)):
        if obj["kind"] == "Job":
            continue
        for c in containers(obj, init=False):
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in c, f"{name(obj)}/{c['name']} has no {probe}"
            if not is_kubenetmon_image(c["image"]):
                continue
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert set(ports) == {"metrics"}, f"{name(obj)}: ports {ports}"
            for probe, path in (
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ):
                get = c[probe]["httpGet"]
                assert (get["path"], get["port"]) == (path, "metrics"), f"{name(obj)} {probe}"


def _pod_and_container_security(
    obj: dict[str, Any], c: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    return pod_spec(obj).get("securityContext", {}), c.get("securityContext", {})


def test_security_contexts(target: str) -> None:
    for obj in workloads(render(target)):
        spec = pod_spec(obj)
        assert not spec.get("hostPID") and not spec.get("hostIPC"), name(obj)
        for c in containers(obj):
            pod_sc, sc = _pod_and_container_security(obj, c)
            where = f"{target}: {name(obj)}/{c['name']}"
            assert sc.get("privileged") is False, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile")) == {"type": "RuntimeDefault"}, (
                where
            )
            added = sc.get("capabilities", {}).get("add", [])
            if component(obj) == "agent":
                assert added == ["NET_ADMIN"], where
                assert pod_sc.get("runAsUser") == 0, where
            else:
                assert added == [], where
                assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0, where
            if is_kubenetmon_image(c["image"]) or component(obj) == "nats":
                assert sc.get("readOnlyRootFilesystem") is True, where


def test_only_the_agent_uses_the_host(target: str) -> None:
    for obj in workloads(render(target)):
        spec = pod_spec(obj)
        host_paths = [v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v]
        if component(obj) == "agent":
            assert spec["hostNetwork"] is True
            assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
            assert host_paths == ["/run/kubenetmon"]
        else:
            assert not spec.get("hostNetwork"), name(obj)
            assert host_paths == [], name(obj)


def test_agent_runs_on_every_node_with_priority(target: str) -> None:
    objects = render(target)
    agent = named(objects, "DaemonSet", "kubenetmon-agent")
    spec = pod_spec(agent)
    assert {"operator": "Exists"} in spec["tolerations"]
    named(objects, "PriorityClass", spec["priorityClassName"])
    (c,) = spec["containers"]
    node = next(e for e in c["env"] if e["name"] == "KUBENETMON_NODE_NAME")
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["state"] == "/run/kubenetmon"
    assert "--state-dir=/run/kubenetmon" in c["args"]
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    # resident memory (<= 200 MB at 250k flows) plus the event buffer the kernel charges to the pod
    buffer = next(a for a in c["args"] if a.startswith("--event-buffer="))
    assert buffer == "--event-buffer=256MiB" and mebibytes(limits["memory"]) >= 200 + 256
    assert cpu_cores(requests["cpu"]) <= 0.3 and cpu_cores(limits["cpu"]) >= 0.3


def test_agents_authenticate_as_their_node(target: str) -> None:
    """Each agent presents its own pod's token (audience kubenetmon), never a shared password; the auth
    service accepts exactly the agent's ServiceAccount; a NATS server in the overlay asks it."""
    objects = render(target)
    agent = named(objects, "DaemonSet", "kubenetmon-agent")
    spec = pod_spec(agent)
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert "KUBENETMON_NATS_PASSWORD" not in env and "KUBENETMON_NATS_USER" not in env
    token_file = env["KUBENETMON_NATS_TOKEN_FILE"]["value"]
    mount = next(m for m in c["volumeMounts"] if token_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["path"] == token_file.rpartition("/")[2] and token["audience"] == "kubenetmon"
    assert token["expirationSeconds"] <= 3600
    auth = named(objects, "Deployment", "kubenetmon-auth")
    (a,) = pod_spec(auth)["containers"]
    assert f"--agent-service-account={NAMESPACE}:{spec['serviceAccountName']}" in a["args"]
    assert not any(arg.startswith("--token-audience") for arg in a["args"])  # default: kubenetmon
    seed = next(arg for arg in a["args"] if arg.startswith("--auth-issuer-seed-file="))
    assert any(seed.endswith(f"{m['mountPath']}/issuer-seed") for m in a["volumeMounts"])
    servers = [o for o in workloads(objects) if component(o) == "nats"]
    for server in servers:
        (n,) = pod_spec(server)["containers"]
        keys = {
            e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in n["env"]
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        }
        assert keys["KUBENETMON_AUTH_ISSUER"] == "auth-issuer"
        identity = named(objects, "ConfigMap", "kubenetmon-nats-config")["data"]["identity.conf"]
        assert "issuer: $KUBENETMON_AUTH_ISSUER" in identity
        (users,) = re.findall(r"auth_users: \[([^\]]*)\]", identity)
        bypass = {u.strip() for u in users.split(",")}
        assert bypass == {f"kubenetmon-{r}" for r in ("enricher", "writer", "metadata", "admin", "auth")}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_pools_take_workers_from_their_cpu_limit(target: str) -> None:
    objects = render(target)
    for role in POOLS:
        deployment = named(objects, "Deployment", f"kubenetmon-{role}")
        (c,) = pod_spec(deployment)["containers"]
        workers = next(e for e in c["env"] if e["name"] == "KUBENETMON_WORKERS")
        field = workers["valueFrom"]["resourceFieldRef"]
        assert field == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}
        assert cpu_cores(c["resources"]["limits"]["cpu"]) >= 1
        assert cpu_cores(c["resources"]["limits"]["cpu"]).is_integer(), (
            "a fractional CPU limit wastes a worker"
        )


def test_pools_scale_and_survive_disruption(target: str) -> None:
    objects = render(target)
    for role in POOLS:
        deployment = named(objects, "Deployment", f"kubenetmon-{role}")
        labels = pod_labels(deployment)
        assert matches(deployment["spec"]["selector"], labels)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pdbs = [p for p in by_kind(objects, "PodDisruptionBudget") if matches(p["spec"]["selector"], labels)]
        assert len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1, role
        hpas = [
            h
            for h in by_kind(objects, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == name(deployment)
        ]
        scaled = [
            s
            for s in by_kind(objects, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == name(deployment)
        ]
        assert len(hpas) + len(scaled) == 1, f"{role}: exactly one autoscaler"
        for hpa in hpas:
            spec = hpa["spec"]
            assert spec["minReplicas"] == deployment["spec"]["replicas"] <= spec["maxReplicas"]
            assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
        for so in scaled:
            types = [t["type"] for t in so["spec"]["triggers"]]
            assert types == ["nats-jetstream", "cpu"]
            lag = so["spec"]["triggers"][0]["metadata"]
            spec = topology.consumer_spec(NatsSettings(), role)
            assert (lag["stream"], lag["consumer"]) == (spec.stream, spec.durable), role


def test_replica_counts_are_separate_per_overlay(target: str) -> None:
    objects = render(target)
    replicas = {
        role: named(objects, "Deployment", f"kubenetmon-{role}")["spec"]["replicas"]
        for role in (*POOLS, "metadata", "auth")
    }
    expected = {
        "overlays/dev": {"enricher": 1, "writer": 1, "metadata": 2, "auth": 2},
        "overlays/production": {"enricher": 4, "writer": 3, "metadata": 2, "auth": 2},
        "overlays/production-nats-cluster": {"enricher": 4, "writer": 3, "metadata": 2, "auth": 2},
    }
    assert replicas == expected.get(target, replicas)
    assert replicas["metadata"] == 2  # one active, one standing by on the lease
    assert replicas["auth"] == 2  # either answers the server's authorization requests


def api_readers(target: str) -> set[str]:
    """The roles that list and watch the API server: production's enrichers read META instead (every
    production variant is the production overlay plus components)."""
    return {"metadata"} if target.startswith("overlays/production") else {"enricher", "metadata"}


def test_rbac_is_least_privilege(target: str) -> None:
    objects = render(target)
    readers = api_readers(target)
    accounts = {name(sa): sa for sa in by_kind(objects, "ServiceAccount")}
    assert set(accounts) == {f"kubenetmon-{role}" for role in ROLES}
    for obj, _ in kubenetmon_containers(objects):
        role = component(obj)
        spec = pod_spec(obj)
        assert spec["serviceAccountName"] == f"kubenetmon-{role}"
        needs_api = role in readers or role == "auth"
        assert spec["automountServiceAccountToken"] is needs_api, role
        assert accounts[f"kubenetmon-{role}"]["automountServiceAccountToken"] is needs_api, role
    for obj in workloads(objects):
        if not any(is_kubenetmon_image(c["image"]) for c in containers(obj)):
            assert pod_spec(obj).get("automountServiceAccountToken") is False, name(obj)
    cluster_roles = {name(r): r for r in by_kind(objects, "ClusterRole")}
    assert set(cluster_roles) == {f"kubenetmon-{role}" for role in (*readers, "auth")}
    read = ["get", "list", "watch"]
    for role_name, cluster_role in cluster_roles.items():
        expected = {("", "pods"): read, ("", "nodes"): read, ("", "services"): read}
        if role_name == "kubenetmon-auth":  # reviews the agents' tokens, cluster-scoped by nature
            expected = {("authentication.k8s.io", "tokenreviews"): ["create"]}
        assert _granted(cluster_role) == expected, role_name
    # ...and reads the pod a token is bound to, in its own namespace only
    (role,) = by_kind(objects, "Role")
    assert name(role) == "kubenetmon-auth" and _granted(role) == {("", "pods"): ["get"]}
    for kind in ("ClusterRole", "Role"):
        binding_kind = f"{kind}Binding"
        roles = {name(r) for r in by_kind(objects, kind)}
        bindings = {name(b): b for b in by_kind(objects, binding_kind)}
        assert set(bindings) == roles, kind
        for binding_name, binding in bindings.items():
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": kind,
                "name": binding_name,
            }
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": binding_name, "namespace": NAMESPACE}
            ]


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    return {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_production_enrichers_read_metadata_from_meta(target: str) -> None:
    config = named(render(target), "ConfigMap", "kubenetmon-config")["data"]
    expected = "meta" if target.startswith("overlays/production") else None
    assert config.get("KUBENETMON_METADATA_SOURCE") == expected


def _allowed(
    objects: tuple[dict[str, Any], ...], labels: dict[str, str], *, direction: str, port: int | str
) -> bool:
    """Whether some NetworkPolicy selecting a pod with ``labels`` allows ``port`` in ``direction``."""
    kind = "Egress" if direction == "egress" else "Ingress"
    for policy in by_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if kind not in spec["policyTypes"] or not matches(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction, []):
            ports = rule.get("ports")
            if ports is None or any(p.get("port") == port for p in ports):
                return True
    return False


def test_network_policies(target: str) -> None:
    objects = render(target)
    deny = [p for p in by_kind(objects, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert any(
        set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in deny
    ), "no default deny"
    for obj, c in kubenetmon_containers(objects):
        role, labels = component(obj), pod_labels(obj)
        assert _allowed(objects, labels, direction="egress", port=53), f"{role}: DNS"
        assert _allowed(objects, labels, direction="egress", port=4222), f"{role}: NATS"
        assert _allowed(objects, labels, direction="egress", port=8123) is (role in ("writer", "init")), role
        api = role in ("enricher", "metadata", "auth")  # enrichers also fetch cloud range lists over HTTPS
        assert _allowed(objects, labels, direction="egress", port=443) is api, role
        if role != "init":
            assert _allowed(objects, labels, direction="ingress", port="metrics"), f"{role}: metrics"
            assert c["ports"][0]["name"] == "metrics"
    for server, port in (("nats", 4222), ("clickhouse", 8123)):
        for obj in workloads(objects):
            if component(obj) == server:
                assert _allowed(objects, pod_labels(obj), direction="ingress", port=port), server


def test_selectors_select_their_pods(target: str) -> None:
    objects = render(target)
    for obj in workloads(objects):
        if obj["kind"] != "Job":
            assert matches(obj["spec"]["selector"], pod_labels(obj)), name(obj)
        assert pod_labels(obj)["app.kubernetes.io/name"] == "kubenetmon"
    pods = [pod_labels(o) for o in workloads(objects)]
    for service in by_kind(objects, "Service"):
        selected = [p for p in pods if matches({"matchLabels": service["spec"]["selector"]}, p)]
        assert len(selected) == 1, name(service)
    for monitor in by_kind(objects, "PodMonitor"):
        selected = [o for o in workloads(objects) if matches(monitor["spec"]["selector"], pod_labels(o))]
        assert len(selected) == 1, name(monitor)
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_references_resolve(target: str) -> None:
    objects = render(target)
    configmaps = {name(o) for o in by_kind(objects, "ConfigMap")}
    secrets = {name(o) for o in by_kind(objects, "Secret")}
    external = {"kubenetmon-nats", "kubenetmon-clickhouse"}
    if target == "overlays/dev" or target == "overlays/dev-keda":
        external = set()
    for obj in workloads(objects):
        spec = pod_spec(obj)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets | external, volume
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {name(t) for t in obj["spec"].get("volumeClaimTemplates", [])}
        for c in containers(obj):
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounted <= volumes, name(obj)
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in secrets | external, var
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in configmaps, var
    if target == "overlays/production":
        assert by_kind(objects, "Secret") == [], "production credentials are never committed"


def test_job_initialises_nats_then_clickhouse(target: str) -> None:
    job = named(render(target), "Job", "kubenetmon-init")
    spec = pod_spec(job)
    assert [c["args"][:2] for c in spec["initContainers"]] == [["nats", "init"]]
    assert [c["args"][:2] for c in spec["containers"]] == [["clickhouse", "migrate"]]
    assert spec["restartPolicy"] == "OnFailure"


def test_dashboard_ships_as_a_configmap(target: str) -> None:
    from pathlib import Path

    objects = render(target)
    dashboard = named(objects, "ConfigMap", "kubenetmon-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = Path(__file__).resolve().parents[2] / "k8s/base/grafana/kubenetmon-dashboard.json"
    assert dashboard["data"] == {"kubenetmon-dashboard.json": source.read_text()}
