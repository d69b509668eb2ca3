"""Which node a reviewed ServiceAccount token speaks for, and the grant its agent gets (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubenetmon.enricher import identity
from kubenetmon.enricher.identity import PodRef, Refused
from kubenetmon.shared import natsjwt
from kubenetmon.shared.settings import NatsSettings

SA = "kubenetmon:kubenetmon-agent"
WRONG_AUDIENCE = "token audiences [x] is invalid for the target audiences [kubenetmon]"
WRITER = "system:serviceaccount:kubenetmon:kubenetmon-writer"


def review(**status: Any) -> dict[str, Any]:
    user = {
        "username": "system:serviceaccount:kubenetmon:kubenetmon-agent",
        "extra": {
            identity.POD_NAME: ["kubenetmon-agent-x7k2p"],
            identity.POD_UID: ["uid-1"],
        },
    }
    return {"status": {"authenticated": True, "audiences": ["kubenetmon"], "user": user, **status}}


def pod(node: str | None = "node-a", uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": "kubenetmon-agent-x7k2p", "uid": uid}, "spec": {"nodeName": node}}


def test_an_agents_token_names_its_pod_and_the_pod_its_node() -> None:
    ref = identity.pod_of(review(), audience="kubenetmon", service_account=SA)
    assert ref == PodRef("kubenetmon", "kubenetmon-agent-x7k2p", "uid-1")
    assert identity.node_of(ref, pod()) == "node-a"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"authenticated": False, "error": "token lookup failed"}, "invalid_token"),
        ({"authenticated": False}, "invalid_token"),
        ({"authenticated": False, "error": WRONG_AUDIENCE}, "wrong_audience"),
        ({"audiences": ["https://kubernetes.default.svc"]}, "wrong_audience"),
        ({"user": {"username": WRITER}}, "wrong_service_account"),
        ({"user": {"username": "system:serviceaccount:other:kubenetmon-agent"}}, "wrong_service_account"),
        ({"user": {"username": "admin"}}, "wrong_service_account"),
        ({"user": {"username": "system:serviceaccount:kubenetmon:kubenetmon-agent"}}, "no_pod_binding"),
    ],
)  # fmt: skip
def test_reviews_that_are_not_an_agent_pods_are_refused(status: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused) as refused:
        identity.pod_of(review(**status), audience="kubenetmon", service_account=SA)
    assert refused.value.reason == reason and reason in identity.REASONS and refused.value.detail


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (None, "pod_not_found"),
        (pod(uid="uid-2"), "pod_uid_mismatch"),
        (pod(node=None), "no_node"),
        (pod(node=""), "no_node"),
    ],
)
def test_a_pod_gone_replaced_or_unscheduled_is_refused(found: dict[str, Any] | None, reason: str) -> None:
    ref = PodRef("kubenetmon", "kubenetmon-agent-x7k2p", "uid-1")
    with pytest.raises(Refused) as refused:
        identity.node_of(ref, found)
    assert refused.value.reason == reason


def test_a_node_named_in_the_token_must_be_the_pods() -> None:
    ref = PodRef("kubenetmon", "kubenetmon-agent-x7k2p", "uid-1", node="node-b")
    with pytest.raises(Refused, match="node_mismatch"):
        identity.node_of(ref, pod())
    assert identity.node_of(PodRef("kubenetmon", "p", "uid-1", node="node-a"), pod()) == "node-a"


def test_the_grant_is_the_nodes_raw_subject_and_its_own_inbox_only() -> None:
    settings = NatsSettings(subject_prefix="metering.prod")
    grant = identity.grant("ip-10-0-0-1.ec2.internal", settings=settings, account="$G")
    node = "ip-10-0-0-1_ec2_internal"  # a node name's dots cannot make it a subject hierarchy
    assert list(grant.publish) == [f"metering.prod.raw.{node}", f"metering.prod.raw.{node}.>"]
    assert list(grant.subscribe) == [f"_INBOX_kubenetmon-agent.{node}.>"]
    assert grant.name == "kubenetmon-agent/ip-10-0-0-1.ec2.internal" and grant.account == "$G"
    assert not any("$JS" in s or "*" in s for s in (*grant.publish, *grant.subscribe))


def test_a_user_lives_no_longer_than_its_token() -> None:
    def jwt(claims: dict[str, Any]) -> str:
        return "e30." + natsjwt.b64(json.dumps(claims).encode()) + ".sig"

    assert identity.expiry_of(jwt({"exp": 1_800_003_600, "aud": ["kubenetmon"]})) == 1_800_003_600
    odd = [jwt({}), jwt({"exp": "soon"}), jwt({"exp": True}), jwt({"exp": -1}), jwt({"exp": 1.5})]
    odd += [jwt({"exp": 2**64 - 1}), jwt({"exp": 2**63})]
    assert identity.expiry_of(jwt({"exp": 4_102_444_800})) == 4_102_444_800  # 2100: a long token, kept
    for token in ("opaque-token", "a.!!.c", "a.bm90IGpzb24.c", *odd):
        assert identity.expiry_of(token) == 0
    grant = identity.grant("n", settings=NatsSettings(), account="$G", expires=1_800_003_600)
    assert grant.expires == 1_800_003_600
