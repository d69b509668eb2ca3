"""The ``kubenetmon auth`` process: nats-server's auth callout for node agents, one NATS user per node.

Why it exists: with one shared agent user, any node's credentials could publish (or suppress, by taking
their message ids first) every other node's reports. In Kubernetes each agent instead presents its
pod's projected ServiceAccount token (audience ``kubenetmon``) as its NATS token; nats-server, configured
with ``authorization { auth_callout { ... } }``, asks this service on ``$SYS.REQ.USER.AUTH``; the service
reviews the token (TokenReview), reads the pod it is bound to, and answers with a user JWT, signed by the
issuer account key, that may publish only that pod's node's RAW subject (``identity.grant``). Anything
else is refused: counted in ``kubenetmon_auth_requests_total{result=<reason>}`` and logged in one line.

Runs as a Deployment of 2 replicas in one queue group: either answers; with both down, agents cannot
(re)connect, and keep their reports on disk until one is back. Requests are not encrypted (no xkey):
they travel on the server's own connection to this service's user, which is the only one allowed to
subscribe to them. It must not publish anything else, nor read any stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from kubenetmon.enricher import identity
from kubenetmon.enricher import metrics as m
from kubenetmon.enricher.identity import Refused
from kubenetmon.enricher.kubeauth import KubeAuth, Unavailable
from kubenetmon.enricher.settings import AuthOptions
from kubenetmon.shared import backoff, natsjwt, runtime
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.pool import Ready, run_worker
from kubenetmon.shared.settings import HttpSettings, NatsSettings, RuntimeSettings

log = logging.getLogger(__name__)

SUBJECT: Final = "$SYS.REQ.USER.AUTH"
QUEUE: Final = "kubenetmon-auth"
_CONNECT_ATTEMPT_S: Final = 5.0
_RETRY_S: Final = 1.0


@dataclass(frozen=True)
class AuthConfig:
    """Everything the auth process needs (picklable: it crosses the spawn)."""

    nats: NatsSettings
    auth: AuthOptions
    runtime: RuntimeSettings
    http: HttpSettings


def work(config: AuthConfig, ready: Ready) -> int:
    """The one worker process (the pool's target)."""
    return run_worker(serve, config, ready)


def load_issuer(path: str) -> Any:
    """The issuer key pair from its seed file; ``ConfigError`` naming the flag if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            return natsjwt.issuer(f.read())
    except (OSError, natsjwt.JwtError) as exc:
        raise ConfigError(f"--auth-issuer-seed-file: {exc}") from None


class Authorizer:
    """Answers one authorization request: a signed user JWT for the token's node, or a refusal."""

    def __init__(self, options: AuthOptions, *, nats: NatsSettings, kube: KubeAuth, signer: Any) -> None:
        self.options, self.nats, self.kube, self.signer = options, nats, kube, signer

    async def answer(self, data: bytes) -> bytes | None:
        started = time.monotonic()
        try:
            request = natsjwt.parse_request(data)
        except natsjwt.JwtError as exc:  # not the server's: no one to answer
            self._refused("malformed_request", str(exc), client="?")
            return None
        now = int(time.time())
        try:
            node = await asyncio.to_thread(self._node, request.token)
        except Refused as exc:
            self._refused(exc.reason, exc.detail, client=_who(request))
            return natsjwt.response(request, self.signer, now=now, error=f"kubenetmon: {exc.reason}")
        expires = identity.expiry_of(request.token)
        grant = identity.grant(node, settings=self.nats, account=self.options.account, expires=expires)
        jwt = natsjwt.user_jwt(request, grant, self.signer, now=now)
        m.AUTH_REQUESTS.labels("granted").inc()
        m.AUTH_SECONDS.observe(time.monotonic() - started)
        log.info("agent authorized", extra={"node": node, "client": _who(request), "expires": expires})
        return natsjwt.response(request, self.signer, now=now, jwt=jwt)

    def _node(self, token: str) -> str:
        """The node ``token``'s pod runs on (blocking: API calls); ``Refused`` otherwise."""
        if not token:
            raise Refused("no_token", "no token presented (a user or password is not accepted)")
        try:
            review = self.kube.review(token, audience=self.options.audience)
            ref = identity.pod_of(
                review, audience=self.options.audience, service_account=self.options.agent_service_account
            )
            return identity.node_of(ref, self.kube.pod(ref.namespace, ref.name))
        except Unavailable as exc:
            raise Refused("api_unavailable", str(exc)) from None

    def _refused(self, reason: str, detail: str, *, client: str) -> None:
        m.AUTH_REQUESTS.labels(reason).inc()
        log.warning("agent refused: %s: %s", reason, detail, extra={"reason": reason, "client": client})


def _who(request: natsjwt.AuthRequest) -> str:
    return f"{request.host} {request.client_name}".strip() or "?"


async def serve(config: AuthConfig, *, ready: Ready, stop: asyncio.Event) -> int:
    """Answer authorization requests until ``stop``."""
    signer = load_issuer(config.auth.issuer_seed_file)
    kube = KubeAuth(config.auth.watch)
    authorizer = Authorizer(config.auth, nats=config.nats, kube=kube, signer=signer)
    try:
        broker = await _connect(config.nats, name=ready.name, stop=stop)
        if broker is None:
            return 0
        try:
            unsubscribe = await broker.serve(
                SUBJECT, authorizer.answer, queue=QUEUE, limit=config.auth.concurrency
            )
            ready()
            log.info(
                "answering auth callout requests",
                extra={"issuer": signer.public_key.decode(), "audience": config.auth.audience},
            )
            await stop.wait()
            ready(False)
            await unsubscribe()
        finally:
            await broker.drain()
    finally:
        kube.close()
    return 0


async def _connect(settings: NatsSettings, *, name: str, stop: asyncio.Event) -> Broker | None:
    attempt = 0
    while not stop.is_set():
        try:
            return await Broker.connect(settings, name=name, wait_s=_CONNECT_ATTEMPT_S)
        except TransientError as exc:
            attempt += 1
            if backoff.now_and_then(attempt, every=10):
                log.warning("NATS unavailable (attempt %d): %s", attempt, exc)
            await runtime.sleep_or_stop(stop, _RETRY_S)
    return None
