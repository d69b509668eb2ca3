"""Which node an agent's ServiceAccount token speaks for, and what NATS user that node's agent gets.

Why it exists: an agent may publish only its own node's reports. The auth callout service hands the
token an agent presents to the API server (TokenReview, audience ``kubenetmon``); this module reads the
review (authenticated? our audience? the agent's ServiceAccount? bound to which pod?) and the pod (same
UID? on which node?), and turns the node into a grant: publish on ``<prefix>.raw.<node>`` (and below it),
subscribe to the node's own reply inbox, nothing else (no JetStream API, no stream read: an agent can
never learn another agent's message ids). Every refusal has a reason from ``REASONS`` (the metric's
label) and one line of detail for the log.

Pure: the review and the pod come in as the API's JSON; ``kubeauth`` fetches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from kubenetmon.shared import natsjwt
from kubenetmon.shared.natsjwt import UserGrant
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.shared.topology import agent_inbox, raw_subject

POD_NAME: Final = "authentication.kubernetes.io/pod-name"
POD_UID: Final = "authentication.kubernetes.io/pod-uid"
NODE_NAME: Final = "authentication.kubernetes.io/node-name"
SA_PREFIX: Final = "system:serviceaccount:"
_MAX_EXP: Final = 1 << 62
"""An ``exp`` past this (the server reads it as a signed 64-bit integer) is not a real token's."""
REASONS: Final = (
    "malformed_request",
    "no_token",
    "invalid_token",
    "wrong_audience",
    "wrong_service_account",
    "no_pod_binding",
    "pod_not_found",
    "pod_uid_mismatch",
    "no_node",
    "node_mismatch",
    "api_unavailable",
)


class Refused(Exception):
    """The connection is refused: ``reason`` (one of ``REASONS``) and a one-line ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod a token is bound to, as the TokenReview says."""

    namespace: str
    name: str
    uid: str
    node: str = ""
    """The node the token names (Kubernetes >= 1.30 adds it), else empty."""


def pod_of(review: dict[str, Any], *, audience: str, service_account: str) -> PodRef:
    """The pod a reviewed token is bound to; ``Refused`` unless it is the agent's, for ``audience``.

    ``service_account`` is ``namespace:name``: any pod may request a token for any audience, so the
    audience alone says nothing about who holds it.
    """
    status = review.get("status") or {}
    if not status.get("authenticated"):
        error = str(status.get("error") or "not authenticated")
        reason = "wrong_audience" if "audience" in error.lower() else "invalid_token"
        raise Refused(reason, error[:300])
    audiences = status.get("audiences")
    if audiences is not None and audience not in audiences:
        raise Refused("wrong_audience", f"token audiences {audiences!r}, not {audience!r}")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if username != SA_PREFIX + service_account:
        raise Refused("wrong_service_account", f"{username!r} is not {SA_PREFIX + service_account!r}")
    extra = user.get("extra") or {}
    name, uid, node = (_first(extra.get(k)) for k in (POD_NAME, POD_UID, NODE_NAME))
    if not name or not uid:
        raise Refused("no_pod_binding", f"{username}: the token is not bound to a pod")
    return PodRef(namespace=service_account.partition(":")[0], name=name, uid=uid, node=node)


def node_of(ref: PodRef, pod: dict[str, Any] | None) -> str:
    """The node the pod runs on; ``Refused`` if it is gone, replaced (another UID) or unscheduled."""
    where = f"pod {ref.namespace}/{ref.name}"
    if pod is None:
        raise Refused("pod_not_found", f"{where} does not exist")
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("uid") != ref.uid:
        raise Refused("pod_uid_mismatch", f"{where} is uid {meta.get('uid')!r}, the token's {ref.uid!r}")
    node = str(spec.get("nodeName") or "")
    if not node:
        raise Refused("no_node", f"{where} is on no node")
    if ref.node and ref.node != node:
        raise Refused("node_mismatch", f"{where} is on {node!r}, the token names {ref.node!r}")
    return node


def grant(node: str, *, settings: NatsSettings, account: str, expires: int = 0) -> UserGrant:
    """Node ``node``'s agent: publish its reports (acknowledged: replies to its own inbox), nothing else,
    until ``expires`` (Unix seconds, 0: no end): then the server disconnects it and it must present a
    current token again."""
    subject = raw_subject(settings, node)
    return UserGrant(
        name=f"kubenetmon-agent/{node}",
        publish=[subject, f"{subject}.>"],
        subscribe=[f"{agent_inbox(node)}.>"],
        account=account,
        expires=expires,
    )


def expiry_of(token: str) -> int:
    """The ``exp`` claim of a ServiceAccount token (a JWT the TokenReview has just accepted), else 0.

    A projected token lives an hour or so; a user issued for it lives no longer, so a deleted pod's
    identity (or a stolen token's) ends with the token, not with the connection."""
    try:
        exp = natsjwt.claims_of(token).get("exp")
    except natsjwt.JwtError:
        return 0
    if isinstance(exp, int) and not isinstance(exp, bool) and 0 < exp < _MAX_EXP:
        return exp
    return 0


def _first(value: object) -> str:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return value if isinstance(value, str) else ""
