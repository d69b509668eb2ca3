"""The index fed by events and lists, and static inventories in the formats kubectl prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.enricher import inventory
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.objects import owner
from kubenetmon.shared.errors import ConfigError
from tests.support.builders import T0, node, pod, service


def ip(text: str) -> bytes:
    import ipaddress

    return ipaddress.ip_address(text).packed


def name_at(index: Index, address: str, at: float) -> str | None:
    found = index.pod_at(ip(address), at, at + 60)
    return None if found is None else found.name


def test_ready_needs_every_kind_listed() -> None:
    index = Index()
    index.replace("pods", [], now=T0)
    index.replace("nodes", [], now=T0)
    assert not index.ready
    index.replace("services", [], now=T0)
    assert index.ready


def test_relist_deletes_what_is_missing_but_keeps_it_for_the_grace_period() -> None:
    index = Index(grace_seconds=600)
    index.replace("pods", [pod("a", "10.0.0.1", node="n1"), pod("b", "10.0.0.2", node="n1")], now=T0)
    index.replace("pods", [pod("b", "10.0.0.2", node="n1")], now=T0 + 100)
    assert name_at(index, "10.0.0.1", T0 + 50) == "a"  # before it disappeared
    assert name_at(index, "10.0.0.1", T0 + 400) == "a"  # after, within the grace period
    assert name_at(index, "10.0.0.1", T0 + 800) is None
    index.prune(now=T0 + 800)
    assert index.sizes()["pods"] == 1 and ip("10.0.0.1") not in index.by_ip


def test_pending_pod_gets_its_ip_later_and_dual_stack_ips_both_resolve() -> None:
    index = Index()
    pending = pod("a", [], node="n1", phase="Pending")
    index.apply("pods", "ADDED", pending, now=T0)
    assert index.sizes()["pod_ips"] == 0
    index.apply("pods", "MODIFIED", pod("a", ["10.0.0.1", "fd00::1"], node="n1"), now=T0 + 5)
    assert name_at(index, "10.0.0.1", T0) == name_at(index, "fd00::1", T0) == "a"


def test_host_network_pods_hold_no_pod_ip() -> None:
    index = Index()
    index.apply("pods", "ADDED", pod("exporter", "192.168.0.1", node="n1", host_network=True), now=T0)
    assert index.sizes()["pod_ips"] == 0


def test_a_completed_pod_keeps_its_ips_for_earlier_intervals_but_never_holds_them_again() -> None:
    index = Index(grace_seconds=300)
    index.apply("pods", "ADDED", pod("job", "10.0.0.9", node="n1", uid="u"), now=T0)
    index.apply(
        "pods",
        "MODIFIED",
        pod("job", [], node="n1", uid="u", phase="Succeeded", finished=T0 + 60),
        now=T0 + 61,
    )
    assert name_at(index, "10.0.0.9", T0) == "job"
    index.apply("pods", "MODIFIED", pod("job", "10.0.0.9", node="n1", uid="u"), now=T0 + 70)  # a stale status
    assert index.pods["u"].until == T0 + 60
    assert name_at(index, "10.0.0.9", T0 + 1000) is None


def test_two_live_pods_on_one_ip_are_ambiguous_and_counted() -> None:
    index = Index()
    index.apply("pods", "ADDED", pod("a", "10.0.0.1", node="n1", uid="ua"), now=T0)
    index.apply("pods", "ADDED", pod("b", "10.0.0.1", node="n2", uid="ub"), now=T0)
    assert name_at(index, "10.0.0.1", T0) is None
    assert index.ambiguous == 1


def test_nodes_and_services_follow_events_with_grace() -> None:
    index = Index(grace_seconds=60)
    index.apply("nodes", "ADDED", node("n1", "192.168.0.1", external="203.0.113.1", zone="z"), now=T0)
    index.apply("services", "ADDED", service("web", ["10.96.0.1", "fd00:96::1"], node_ports=(30080,)), now=T0)
    assert index.node_ips == {ip("192.168.0.1"): "n1", ip("203.0.113.1"): "n1"}
    assert index.services[ip("fd00:96::1")] == "default/web" and index.node_ports == {30080: "default/web"}
    index.apply("nodes", "MODIFIED", node("n1", "192.168.0.7", zone="z2"), now=T0 + 1)
    assert index.node_ips == {ip("192.168.0.7"): "n1"} and index.nodes["n1"].zone == "z2"
    index.apply("nodes", "DELETED", node("n1", "192.168.0.7"), now=T0 + 2)
    index.apply("services", "DELETED", service("web", "10.96.0.1"), now=T0 + 2)
    assert "n1" in index.nodes and ip("10.96.0.1") in index.services  # still there within the grace
    index.prune(now=T0 + 100)
    assert not index.nodes and not index.node_ips and not index.services and not index.node_ports


def test_owner_conventions() -> None:
    def meta(kind: str, name: str, **labels: str) -> dict[str, object]:
        return {"labels": labels, "ownerReferences": [{"kind": kind, "name": name, "controller": True}]}

    assert owner(meta("ReplicaSet", "web-7c9d8", **{"pod-template-hash": "7c9d8"})) == ("Deployment", "web")
    assert owner(meta("ReplicaSet", "web-7c9d8")) == ("ReplicaSet", "web-7c9d8")
    assert owner(meta("Job", "backup-28374560")) == ("CronJob", "backup")
    assert owner(meta("Job", "migrate-42")) == ("Job", "migrate-42")
    assert owner(meta("DaemonSet", "cni")) == ("DaemonSet", "cni")
    assert owner({}) == ("", "")


def test_inventory_yaml_list_as_kubectl_prints_it(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            node("n1", "192.168.0.1"),
            pod("a", "10.0.0.1", node="n1"),
            service("s", "10.96.0.1"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        ],
        "metadata": {"resourceVersion": ""},
    }
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc))
    index = Index()
    assert inventory.load(index, path) == {"pods": 1, "nodes": 1, "services": 1}
    assert index.ready and name_at(index, "10.0.0.1", T0) == "a"


def test_inventory_json_and_typed_lists_and_multiple_documents(tmp_path: Path) -> None:
    typed = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [{k: v for k, v in pod("a", "10.0.0.1", node="n1").items() if k != "kind"}],
    }
    json_path = tmp_path / "pods.json"
    json_path.write_text(json.dumps(typed))
    assert inventory.read(json_path)["pods"][0]["kind"] == "Pod"
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        yaml.safe_dump(node("n1", "192.168.0.1")) + "---\n" + yaml.safe_dump(service("s", "10.96.0.1"))
    )
    objects = inventory.read(multi)
    assert (len(objects["nodes"]), len(objects["services"]), len(objects["pods"])) == (1, 1, 0)
    broken = tmp_path / "broken.yaml"
    broken.write_text("items: [unclosed")
    with pytest.raises(ConfigError):
        inventory.read(broken)
