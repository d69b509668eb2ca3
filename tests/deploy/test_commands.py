"""Every command the manifests and the compose stack run is a valid ``kubenetmon`` invocation.

Each container's arguments and environment (resolved as the kubelet or Docker would: ConfigMaps,
Secrets, the downward API) go through the real parser and the real settings validation, so a renamed
flag, a missing required value or a value the service would refuse at start fails here, in CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy import invocation
from tests.deploy.render import (
    NODE_NAME,
    OVERLAYS,
    command_line,
    component,
    kubenetmon_containers,
    pod_spec,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
TARGETS = tuple(f"overlays/{o}" for o in OVERLAYS)
DRAIN_MARGIN_S = 10


def k8s_commands() -> list[tuple[str, str, str]]:
    return [
        (target, obj["metadata"]["name"], c["name"])
        for target in TARGETS
        for obj, c in kubenetmon_containers(render(target))
    ]


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return {
        name: s for name, s in services.items() if s["image"] == "kubenetmon:dev" and "entrypoint" not in s
    }


def find(target: str, workload: str, container: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for obj, c in kubenetmon_containers(render(target)):
        if obj["metadata"]["name"] == workload and c["name"] == container:
            return obj, c
    raise AssertionError(f"{target}: no container {workload}/{container}")


def served_port(built: list[Any]) -> int:
    """The port of /metrics, /healthz and /readyz (the agent names its flag --metrics-port)."""
    for obj in built:
        if type(obj).__name__ == "AgentSettings":
            return int(obj.metrics_port)
    return int(invocation.setting(built, "HttpSettings", "port"))


@pytest.mark.parametrize(("target", "workload", "container"), k8s_commands())
def test_kubernetes_command_is_valid(target: str, workload: str, container: str) -> None:
    obj, c = find(target, workload, container)
    argv, env = command_line(render(target), c)
    args, built = invocation.check(argv, env)
    role = component(obj)
    assert args.command == {"init": argv[0]}.get(role, role)
    if role == "agent":
        assert NODE_NAME in {
            getattr(args, "node_name", None),
            *(getattr(s, "node_name", None) for s in built),
        }
    if role in ("agent", "enricher", "writer"):
        port = served_port(built)
        assert port == c["ports"][0]["containerPort"], f"{workload}: serves on {port}"
        drain = invocation.setting(built, "RuntimeSettings", "drain_timeout_s")
        grace = pod_spec(obj)["terminationGracePeriodSeconds"]
        assert grace >= drain + DRAIN_MARGIN_S, f"{workload}: grace {grace}s, drain {drain}s"
    if role == "agent":
        startup = c["startupProbe"]
        young = invocation.setting(built, "AgentSettings", "young_node_s")
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= young + 30, "start-up must outlast the wait for --young-node"
    if role in ("enricher", "writer"):
        workers = invocation.setting(built, "PoolSettings", "workers")
        assert workers == int(env["KUBENETMON_WORKERS"]) >= 1


@pytest.mark.parametrize("service", sorted(compose_services()))
def test_compose_command_is_valid(service: str) -> None:
    spec = compose_services()[service]
    env = {k: str(v) for k, v in spec.get("environment", {}).items()}
    args, built = invocation.check([str(a) for a in spec["command"]], env)
    assert args.command == spec["command"][0]
    if service in ("agent", "enricher", "writer"):
        port = served_port(built)
        assert f"127.0.0.1:{port}/readyz" in " ".join(spec["healthcheck"]["test"])


def test_the_checker_catches_a_bad_invocation() -> None:
    with pytest.raises(invocation.InvalidInvocation):
        invocation.check(["nats", "init", "--no-such-flag"], {})
    with pytest.raises(invocation.InvalidInvocation):
        invocation.check(["nats", "init"], {"KUBENETMON_NATS_URL": "http://not-nats"})
    with pytest.raises(invocation.InvalidInvocation):
        invocation.check(["clickhouse", "migrate"], {})  # no DSN
