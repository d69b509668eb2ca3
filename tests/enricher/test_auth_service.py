"""The auth callout's answers, without a NATS server: an API server that does not answer refuses the
agent (``api_unavailable``) instead of hanging the server's authorization; a request that is not the
server's gets no answer at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nkeys  # type: ignore[import-untyped]
import pytest

from kubenetmon.cli.natsserver import free_port
from kubenetmon.enricher.auth_service import Authorizer
from kubenetmon.enricher.kubeauth import KubeAuth
from kubenetmon.enricher.settings import AuthOptions
from kubenetmon.shared import natsjwt
from kubenetmon.shared.settings import NatsSettings


def _signer() -> object:
    return natsjwt.issuer(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode())


def _request(token: str) -> bytes:
    claims = {
        "aud": natsjwt.REQUEST_AUDIENCE,
        "nats": {
            "type": "authorization_request",
            "user_nkey": "UUSER",
            "server_id": {"id": "NSERVER"},
            "connect_opts": {"auth_token": token},
        },
    }
    return natsjwt.encode(claims, _signer(), now=1_800_000_000).encode()


@pytest.fixture
def unreachable(tmp_path: Path) -> AuthOptions:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    return AuthOptions(kubeconfig=str(kubeconfig), issuer_seed_file="unused", kube_timeout_s=1.0)


async def test_an_api_server_that_does_not_answer_refuses_the_agent(
    unreachable: AuthOptions, caplog: pytest.LogCaptureFixture
) -> None:
    kube = KubeAuth(unreachable.watch)
    try:
        authorizer = Authorizer(unreachable, nats=NatsSettings(), kube=kube, signer=_signer())
        answer = await authorizer.answer(_request("some-token"))
    finally:
        kube.close()
    assert answer is not None
    claims = natsjwt.claims_of(answer.decode())
    assert (claims["sub"], claims["aud"]) == ("UUSER", "NSERVER")
    assert claims["nats"]["error"] == "kubenetmon: api_unavailable" and "jwt" not in claims["nats"]
    assert "agent refused: api_unavailable: TokenReview failed" in caplog.text
    assert "some-token" not in caplog.text


async def test_a_request_that_is_not_the_servers_gets_no_answer(unreachable: AuthOptions) -> None:
    kube = KubeAuth(unreachable.watch)
    try:
        authorizer = Authorizer(unreachable, nats=NatsSettings(), kube=kube, signer=_signer())
        assert await authorizer.answer(b"not a jwt") is None
        assert await authorizer.answer(b"\x00" * 1024) is None
    finally:
        kube.close()
