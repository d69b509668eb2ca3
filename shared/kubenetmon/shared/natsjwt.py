"""NATS JWTs for auth callout: read the server's authorization request, sign the user and the response.

Why it exists: the auth callout service answers nats-server's ``$SYS.REQ.USER.AUTH`` requests. Each one is
a JWT (``nats.type`` ``authorization_request``) naming the user key the server generated for the
connection (``user_nkey``), the server (``server_id.id``) and what the client presented
(``connect_opts``: ``auth_token``, ``user``, ``pass``...). The answer is a JWT (``authorization_response``)
signed by the issuer account key the server trusts (``auth_callout.issuer``), addressed to that server
(``aud``) and that user (``sub``), carrying either an error or a user JWT: the permissions the server
then enforces on the connection. The user JWT's ``aud`` names the account the user is placed in
(``$G`` on a server without accounts).

The request's signature is not checked: it is the server's own key, which nothing pins; what makes a
request trustworthy is that no client may publish on ``$SYS.REQ.USER.AUTH`` (the server only accepts an
answer for the user key it generated, on the reply subject it chose). Pure: no I/O, no clock reads
(callers pass ``now``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nkeys  # type: ignore[import-untyped]

REQUEST_AUDIENCE: Final = "nats-authorization-request"
_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
GLOBAL_ACCOUNT: Final = "$G"


class JwtError(ValueError):
    """Not a JWT, or not the claims expected."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What the server asks about one connection attempt."""

    user_nkey: str
    """The public user key the server generated for this connection: the issued user's ``sub``."""
    server_id: str
    """The asking server's id: the response's ``aud``."""
    token: str = ""
    """``auth_token`` the client presented (for kubenetmon agents: a ServiceAccount token)."""
    user: str = ""
    client_name: str = ""
    host: str = ""
    """The client's address, as the server saw it."""


@dataclass(frozen=True, slots=True)
class UserGrant:
    """A user to issue: its name (shown in the server's logs and connz) and its subjects."""

    name: str
    publish: Sequence[str]
    subscribe: Sequence[str]
    account: str = GLOBAL_ACCOUNT
    expires: int = 0
    """Unix seconds after which the server disconnects the user (0: never)."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"bad base64: {exc}") from None


def issuer(seed: str) -> Any:
    """The signing key pair from an account seed (``SA...``); ``JwtError`` for anything else."""
    try:
        keys = nkeys.from_seed(seed.strip().encode())
    except Exception as exc:  # nkeys raises its own error types and binascii errors
        raise JwtError(f"not an nkey seed: {type(exc).__name__}") from None
    if not keys.public_key.startswith(b"A"):
        raise JwtError("the issuer must be an account key (a seed starting with SA)")
    return keys


def encode(claims: Mapping[str, Any], signer: Any, *, now: int) -> str:
    """A signed JWT of ``claims`` (``iat``, ``iss`` and ``jti`` added)."""
    body: dict[str, Any] = {"iat": now, "iss": signer.public_key.decode(), **claims, "jti": ""}
    digest = hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = b64(json.dumps(body, separators=(",", ":")).encode())
    signature = b64(signer.sign(f"{head}.{payload}".encode()))
    return f"{head}.{payload}.{signature}"


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (see the module docstring for why that is enough here)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("not a JWT (three dot-separated parts)")
    try:
        claims = json.loads(unb64(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JwtError(f"claims are not JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise JwtError("claims are not an object")
    return claims


def parse_request(data: bytes) -> AuthRequest:
    """The authorization request in a ``$SYS.REQ.USER.AUTH`` message (unencrypted: no ``xkey``)."""
    try:
        claims = claims_of(data.decode())
    except UnicodeDecodeError:
        raise JwtError("not a JWT (binary: is the request encrypted with an xkey?)") from None
    nats = claims.get("nats")
    if claims.get("aud") != REQUEST_AUDIENCE or not isinstance(nats, dict):
        raise JwtError("not an authorization request")
    if nats.get("type") not in (None, "authorization_request"):
        raise JwtError(f"not an authorization request: type {nats.get('type')!r}")
    server, connect, client = (nats.get(k) or {} for k in ("server_id", "connect_opts", "client_info"))
    if not all(isinstance(x, dict) for x in (server, connect, client)):
        raise JwtError("malformed authorization request")
    user_nkey, server_id = nats.get("user_nkey"), server.get("id")
    if not isinstance(user_nkey, str) or not user_nkey or not isinstance(server_id, str) or not server_id:
        raise JwtError("authorization request without user_nkey or server id")
    return AuthRequest(
        user_nkey=user_nkey,
        server_id=server_id,
        token=_text(connect.get("auth_token")),
        user=_text(connect.get("user")),
        client_name=_text(connect.get("name")),
        host=_text(client.get("host")),
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def user_jwt(request: AuthRequest, grant: UserGrant, signer: Any, *, now: int) -> str:
    """The user JWT for the connection ``request`` describes: only ``grant``'s subjects, nothing else."""
    claims: dict[str, Any] = {
        "sub": request.user_nkey,
        "aud": grant.account,
        "name": grant.name,
        "nats": {
            "pub": {"allow": list(grant.publish)},
            "sub": {"allow": list(grant.subscribe)},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
            **grant.extra,
        },
    }
    if grant.expires:
        claims["exp"] = grant.expires
    return encode(claims, signer, now=now)


def response(request: AuthRequest, signer: Any, *, now: int, jwt: str = "", error: str = "") -> bytes:
    """The signed authorization response: a user JWT, or an error (the connection is then refused)."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if error:
        nats["error"] = error
    else:
        nats["jwt"] = jwt
    claims = {"sub": request.user_nkey, "aud": request.server_id, "nats": nats}
    return encode(claims, signer, now=now).encode()
