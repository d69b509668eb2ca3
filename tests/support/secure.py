"""Locked-down transport for the security tests: certificates, a TLS nats-server with per-role users, roles.

- ``make_certs``: a CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated
  CA (``other-ca.pem``) that signed nothing the server shows; made with ``openssl``.
- ``SecureNats``: the shipped ``nats.conf`` (one user per role, each with only its subjects), plus
  TLS on the client port with client certificates required (mutual TLS). Role passwords are
  distinctive strings (``PASSWORDS``) so a test can look for them in everything the processes print.
- ``Proc``: ``kubenetmon <role> ...`` with its stderr in a file and an environment of its own.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.settings import NatsSettings
from tests.support import http
from tests.support.commands import KUBENETMON, clean_env
from tests.support.natsconf import ROOT, ConfiguredNats
from tests.support.processes import http_port

PASSWORDS = {
    "kubenetmon-agent": "agent-Pw-q8Zr41",
    "kubenetmon-enricher": "enricher-Pw-Lm27xY",
    "kubenetmon-writer": "writer-Pw-9vTe3K",
    "kubenetmon-metadata": "metadata-Pw-4kWc7J",
    "kubenetmon-admin": "admin-Pw-Hd55sQ",
}
DEADLINE_S = 60.0


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> Path:
    """Write the CA, server, client and unrelated-CA certificates and keys into ``d``."""
    for ca in ("ca", "other-ca"):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN=kubenetmon test {ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            cwd=d,
        )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


class SecureNats(ConfiguredNats):
    """nats-server with the shipped configuration, TLS and required client certificates."""

    def __init__(self, store: Path, conf: Path, certs: Path) -> None:
        super().__init__(store, conf)
        self.certs = certs

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        c = self.certs
        return [
            *super().command(),
            "--tlsverify",
            "--tlscert",
            str(c / "server.pem"),
            "--tlskey",
            str(c / "server.key"),
            "--tlscacert",
            str(c / "ca.pem"),
        ]


def role_settings(server: NatsServer, certs: Path, user: str, **overrides: Any) -> NatsSettings:
    """What a role connects with: its user, the CA, the client certificate (the shipped default names)."""
    values: dict[str, Any] = {
        "urls": (server.url,),
        "user": user,
        "password": PASSWORDS[user],
        "tls_ca": str(certs / "ca.pem"),
        "tls_cert": str(certs / "client.pem"),
        "tls_key": str(certs / "client.key"),
        "connect_timeout_s": 2.0,
    }
    values.update(overrides)
    return NatsSettings(**values)


def tls_flags(server: NatsServer, certs: Path, *, ca: str = "ca.pem") -> list[str]:
    return [
        "--nats-url",
        server.url,
        "--nats-tls-ca",
        str(certs / ca),
        "--nats-tls-cert",
        str(certs / "client.pem"),
        "--nats-tls-key",
        str(certs / "client.key"),
    ]


@dataclass
class Proc:
    """A ``kubenetmon`` process: stdout and stderr in files, and its metrics port once it says it."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.err.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def port(self) -> int | None:
        return http_port(self)

    def get(self, path: str) -> tuple[int, str]:
        port = self.port()
        if port is None:
            return 0, ""
        try:
            return http.get(port, path)
        except OSError:
            return 0, ""

    def wait(self, timeout: float = DEADLINE_S) -> int:
        return self.popen.wait(timeout)


def start(argv: list[str], *, name: str, logs: Path, env: dict[str, str] | None = None) -> Proc:
    """Run ``kubenetmon ARGV`` from the repository root in a clean environment plus ``env``; its output
    goes to ``LOGS.out`` and ``LOGS.err``."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("wb") as o, err.open("wb") as e:
        popen = subprocess.Popen(
            [*KUBENETMON, *argv], stdout=o, stderr=e, env=clean_env(**(env or {})), cwd=ROOT
        )
    return Proc(name, popen, out, err)
