"""NATS JWTs for the auth callout: the request read, the user and the response signed as nats-server
expects (ed25519 over header.payload by the issuer account key; sub, aud, nats.type)."""

from __future__ import annotations

import base64
import json
import os

import nacl.signing
import nkeys  # type: ignore[import-untyped]
import pytest

from kubenetmon.shared import natsjwt
from kubenetmon.shared.natsjwt import AuthRequest, JwtError, UserGrant

NOW = 1_800_000_000


def _seed(prefix: int) -> str:
    return str(nkeys.encode_seed(os.urandom(32), prefix).decode())


def _request_jwt(**nats: object) -> bytes:
    server = natsjwt.issuer(_seed(nkeys.PREFIX_BYTE_ACCOUNT))  # any key signs; it is not checked
    claims = {
        "aud": natsjwt.REQUEST_AUDIENCE,
        "sub": "ISSUER",
        "nats": {
            "type": "authorization_request",
            "version": 2,
            "user_nkey": "UUSERKEY",
            "server_id": {"id": "NSERVERID", "name": "s"},
            "connect_opts": {"auth_token": "tok", "name": "agent-node-a", "protocol": 1},
            "client_info": {"host": "10.0.0.7"},
            **nats,
        },
    }
    return natsjwt.encode(claims, server, now=NOW).encode()


def _verify(token: str, public: str) -> dict[str, object]:
    head, payload, signature = token.split(".")
    key = nacl.signing.VerifyKey(_public_bytes(public))
    key.verify(f"{head}.{payload}".encode(), natsjwt.unb64(signature))  # raises if it does not verify
    assert json.loads(natsjwt.unb64(head)) == {"typ": "JWT", "alg": "ed25519-nkey"}
    return natsjwt.claims_of(token)


def _public_bytes(public: str) -> bytes:
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    return raw[1:-2]  # prefix byte, 32 key bytes, crc16


def test_a_request_is_read() -> None:
    request = natsjwt.parse_request(_request_jwt())
    assert request == AuthRequest(
        user_nkey="UUSERKEY", server_id="NSERVERID", token="tok", client_name="agent-node-a", host="10.0.0.7"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe binary: an encrypted request",
        b"a.b",
        b"x.bm90IGpzb24.y",
        _request_jwt(type="authorization_response"),
        _request_jwt(user_nkey=""),
        _request_jwt(server_id={"name": "no id"}),
        _request_jwt(connect_opts="not a map"),
    ],
)
def test_anything_else_is_not_a_request(data: bytes) -> None:
    with pytest.raises(JwtError):
        natsjwt.parse_request(data)


def test_the_user_and_the_response_are_signed_by_the_issuer() -> None:
    signer = natsjwt.issuer(_seed(nkeys.PREFIX_BYTE_ACCOUNT))
    public = signer.public_key.decode()
    request = natsjwt.parse_request(_request_jwt())
    grant = UserGrant(
        name="kubenetmon-agent/node-a", publish=["kubenetmon.raw.node-a"], subscribe=["_INBOX_x.>"]
    )
    user = natsjwt.user_jwt(request, grant, signer, now=NOW)
    answer = natsjwt.response(request, signer, now=NOW, jwt=user).decode()

    claims = _verify(answer, public)
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("UUSERKEY", "NSERVERID", public)
    assert claims["nats"] == {"type": "authorization_response", "version": 2, "jwt": user}
    user_claims = _verify(user, public)
    assert (user_claims["sub"], user_claims["aud"], user_claims["name"]) == (
        "UUSERKEY",
        "$G",
        "kubenetmon-agent/node-a",
    )
    nats = user_claims["nats"]
    assert isinstance(nats, dict)
    assert nats["pub"] == {"allow": ["kubenetmon.raw.node-a"]} and nats["sub"] == {"allow": ["_INBOX_x.>"]}
    assert nats["type"] == "user" and "exp" not in user_claims


def test_a_refusal_carries_its_error_and_no_user() -> None:
    signer = natsjwt.issuer(_seed(nkeys.PREFIX_BYTE_ACCOUNT))
    request = natsjwt.parse_request(_request_jwt())
    claims = natsjwt.claims_of(
        natsjwt.response(request, signer, now=NOW, error="kubenetmon: no_token").decode()
    )
    assert claims["nats"] == {"type": "authorization_response", "version": 2, "error": "kubenetmon: no_token"}


@pytest.mark.parametrize("seed", ["", "not a seed", "SU" + "A" * 56])
def test_the_issuer_must_be_an_account_seed(seed: str) -> None:
    with pytest.raises(JwtError):
        natsjwt.issuer(seed)
    with pytest.raises(JwtError, match="account"):
        natsjwt.issuer(_seed(nkeys.PREFIX_BYTE_USER))
