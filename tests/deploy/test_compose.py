"""``compose.yaml`` follows the Compose specification and wires the stack so ``docker compose up --wait``
starts it in order: servers healthy, then the one-shot init services, then the roles, then traffic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
ONE_SHOT = {"node-sysctls", "init-nats", "init-clickhouse", "traffic-source"}
ROLES = {"agent", "enricher", "writer"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = {
        **compose,
        "services": {**services(compose), "nats": {**services(compose)["nats"], "helthcheck": {}}},
    }
    assert not jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).is_valid(broken)


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
        else:
            assert service["healthcheck"]["test"], name


def test_start_order_uses_conditions(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in all_services, f"{name} -> {dependency}"
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {dependency}"
    assert set(all_services["writer"]["depends_on"]) == {"init-nats", "init-clickhouse"}
    assert set(all_services["enricher"]["depends_on"]) == {"init-nats"}
    assert set(all_services["agent"]["depends_on"]) == {"node-sysctls", "init-nats"}
    assert ROLES <= set(all_services["traffic-source"]["depends_on"])


def test_agent_runs_like_the_daemonset(compose: dict[str, Any]) -> None:
    agent = services(compose)["agent"]
    assert agent["network_mode"] == "host"
    assert agent["cap_drop"] == ["ALL"] and agent["cap_add"] == ["NET_ADMIN"]
    assert agent["user"] == "0:0"
    assert "privileged" not in agent
    host = {name for name, s in services(compose).items() if s.get("network_mode") == "host"}
    assert host == {"node-sysctls", "agent", "traffic-sink"}


def test_the_sysctl_one_shot_is_not_privileged(compose: dict[str, Any]) -> None:
    """It writes the host namespace's three conntrack sysctls through a mounted directory, as root with
    NET_ADMIN only, and exits. Nothing in the stack is privileged."""
    assert not any(s.get("privileged") for s in services(compose).values())
    sysctls = services(compose)["node-sysctls"]
    assert sysctls["restart"] == "no" and sysctls["read_only"] is True
    assert sysctls["cap_drop"] == ["ALL"] and sysctls["cap_add"] == ["NET_ADMIN"]
    assert sysctls["volumes"] == ["/proc/sys/net/netfilter:/run/netfilter"]
    script = " ".join(sysctls["command"])
    for name in ("nf_conntrack_acct", "nf_conntrack_events", "nf_conntrack_timestamp"):
        assert 'echo 1 > "/run/netfilter/$$name"' in script and name in script, name


def test_runs_under_compose_v1(compose: dict[str, Any]) -> None:
    """No top-level ``name:`` (Compose v1 rejects it; the project name comes from ``-p`` or the folder),
    and no ``version:`` (obsolete in v2)."""
    assert set(compose) <= {
        "services",
        "networks",
        "volumes",
        "x-kubenetmon",
        "x-nats-env",
        "x-clickhouse-env",
    }


def test_kubenetmon_services_are_locked_down(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if service["image"] != "kubenetmon:dev":
            continue
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        if name not in ("agent", "node-sysctls"):
            assert "user" not in service and "cap_add" not in service, name


def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = re.sub(r"\$\{[A-Z_]+:-(.+)\}", r"\1", service["image"])  # an overridable default
        tag = image.rpartition(":")[2]
        assert tag and tag != "latest" and "/" not in tag, name


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name}: {source}"


def test_credentials_agree(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    nats_env = all_services["nats"]["environment"]
    passwords = {
        "kubenetmon-agent": nats_env["KUBENETMON_AGENT_PASSWORD"],
        "kubenetmon-enricher": nats_env["KUBENETMON_ENRICHER_PASSWORD"],
        "kubenetmon-writer": nats_env["KUBENETMON_WRITER_PASSWORD"],
        "kubenetmon-admin": nats_env["KUBENETMON_ADMIN_PASSWORD"],
    }
    clickhouse_password = all_services["clickhouse"]["environment"]["KUBENETMON_CLICKHOUSE_PASSWORD"]
    clients = 0
    for name, service in all_services.items():
        env = service.get("environment", {})
        if "KUBENETMON_NATS_USER" in env:
            assert passwords[env["KUBENETMON_NATS_USER"]] == env["KUBENETMON_NATS_PASSWORD"], name
            clients += 1
        if "KUBENETMON_CLICKHOUSE_DSN" in env:
            assert env["KUBENETMON_CLICKHOUSE_PASSWORD"] == clickhouse_password, name
    assert clients == 4


def test_traffic_generator_agrees_with_the_inventory(compose: dict[str, Any]) -> None:
    from tests.support.compose import traffic_plan

    plan = traffic_plan()
    source = services(compose)["traffic-source"]
    assert source["networks"]["flows"]["ipv4_address"] == plan.source_ip
    inventory = yaml.safe_load((ROOT / "tests/deploy/compose/inventory.yaml").read_text())
    pods = [i for i in inventory["items"] if i["kind"] == "Pod"]
    assert [p["status"]["podIP"] for p in pods] == [plan.source_ip]
    nodes = [i for i in inventory["items"] if i["kind"] == "Node"]
    node_ips = {a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"].endswith("IP")}
    assert plan.sink_ip not in node_ips, (
        "the sink's address must not be a node address (node flows are dropped)"
    )
    assert [n["metadata"]["name"] for n in nodes] == ["compose-node"]
    assert pods[0]["spec"]["nodeName"] == "compose-node"


def test_the_compose_flow_is_labelled_as_the_e2e_test_expects(compose: dict[str, Any]) -> None:
    """``kubenetmon label`` (the enricher's own labeler) on the flow the generator makes, offline."""
    from tests.support.commands import kubenetmon
    from tests.support.compose import traffic_plan

    plan = traffic_plan()
    enricher = services(compose)["enricher"]["command"]
    flags = [a for a in enricher if a.split("=")[0] in ("--cloud", "--region", "--cluster", "--environment")]
    record = {
        "proto": "udp",
        "family": "ipv4",
        "orig_src": plan.source_ip,
        "orig_dst": plan.sink_ip,
        "orig_sport": plan.source_port,
        "orig_dport": plan.sink_port,
        "reply_src": plan.sink_ip,
        "reply_dst": plan.source_ip,
        "reply_sport": plan.sink_port,
        "reply_dport": plan.source_port,
        "orig_packets": plan.datagrams,
        "orig_bytes": plan.bytes,
        "reply_packets": 0,
        "reply_bytes": 0,
    }
    out = kubenetmon(
        "label",
        "--node",
        "compose-node",
        "--inventory",
        str(ROOT / "tests/deploy/compose/inventory.yaml"),
        *flags,
        input=json.dumps(record) + "\n",
        timeout=60,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["direction"] for r in rows] == ["out", "in"]
    sent, received = rows
    assert (sent["bytes"], sent["packets"], received["bytes"]) == (plan.bytes, plan.datagrams, 0)
    expected = {
        "localNamespace": "traffic",
        "localPod": "traffic-source",
        "localNode": "compose-node",
        "observerNode": "compose-node",
        "connectionClass": "INTRA_VPC",
        "environment": "compose",
        "proto": "UDP",
        "localPort": plan.source_port,
        "remotePort": plan.sink_port,
    }
    assert {k: sent[k] for k in expected} == expected


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``-f base -f override`` as Compose merges these keys: mappings merge, the rest is replaced."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        elif key == "volumes" and isinstance(value, list):
            result[key] = [*result.get(key, []), *value]
        else:
            result[key] = value
    return result


def test_the_chdb_override_runs_no_clickhouse_server(compose: dict[str, Any]) -> None:
    override = yaml.safe_load((ROOT / "docs" / "compose" / "chdb.yaml").read_text())
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(override))
    assert not errors, [e.message for e in errors]
    assert "name" not in override
    stack = merged(compose, override)["services"]
    images = {s["image"] for s in stack.values()}
    assert not any("clickhouse" in image for image in images), images
    writer = stack["writer"]
    assert writer["environment"]["KUBENETMON_CLICKHOUSE_DSN"] == "chdb:///var/lib/kubenetmon/clickhouse"
    assert "chdb-data:/var/lib/kubenetmon" in writer["volumes"]
    assert "--workers=1" in writer["command"] and "--migrate=true" in writer["command"]
    users = [name for name, s in stack.items() if "chdb-data:/var/lib/kubenetmon" in s.get("volumes", [])]
    assert users == ["writer"], "chDB allows one process per data directory"


def test_the_enricher_expects_the_agents_report_interval(compose: dict[str, Any]) -> None:
    """The enricher dead-letters a report whose start or length is not a multiple of its --interval."""

    def interval(command: list[str]) -> str:
        (value,) = [c.split("=", 1)[1] for c in command if c.startswith("--interval=")] or [
            command[command.index("--interval") + 1]
        ]
        return value

    services = compose["services"]
    assert interval(services["enricher"]["command"]) == interval(services["agent"]["command"]) == "10s"
