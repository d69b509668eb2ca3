"""A minimal NATS operator/account/user setup (decentralised JWT auth) for testing ``--nats-creds``.

It signs the three JWTs with nkeys, writes a server config that trusts the operator (accounts preloaded
into a memory resolver, JetStream enabled for the account) and a user ``.creds`` file, as ``nsc`` would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from kubenetmon.shared import natsjwt


def _keypair(prefix: int) -> Any:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    return natsjwt.encode(claims, signer, now=int(time.time()))  # the auth callout's own signing


def _account(operator: Any, name: str, *, jetstream: bool) -> tuple[Any, str]:
    account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    limits: dict[str, Any] = {"subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1, "data": -1}
    limits.update({"payload": -1, "wildcards": True})
    if jetstream:
        limits.update({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
    claims = {
        "sub": account.public_key.decode(),
        "name": name,
        "nats": {"type": "account", "version": 2, "limits": limits},
    }
    return account, _jwt(claims, operator)


def setup(directory: Path) -> tuple[Path, Path]:
    """Write ``server.conf`` and ``user.creds`` into ``directory``; returns their paths."""
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    operator_jwt = _jwt(
        {"sub": operator.public_key.decode(), "name": "test", "nats": {"type": "operator", "version": 2}},
        operator,
    )
    system, system_jwt = _account(operator, "SYS", jetstream=False)
    account, account_jwt = _account(operator, "KUBENETMON", jetstream=True)
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    user_claims = {
        "sub": user.public_key.decode(),
        "name": "agent",
        "nats": {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1},
    }
    user_jwt = _jwt(user_claims, account)

    conf = directory / "server.conf"
    conf.write_text(
        f"operator: {operator_jwt}\n"
        f"system_account: {system.public_key.decode()}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {system.public_key.decode()}: {system_jwt}\n"
        f"  {account.public_key.decode()}: {account_jwt}\n"
        "}\n"
    )
    creds = directory / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return conf, creds
