"""Locked-down transport for the security tests: certificates, a TLS nats-server with per-role users, roles.

- ``certs``: a CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated
  CA (``other-ca.pem``) that signed nothing the server shows; made with ``openssl`` for this session.
- ``secure_nats``: the shipped ``nats.conf`` (one user per role, each with only its subjects), plus
  TLS on the client port with client certificates required (mutual TLS). Role passwords are
  distinctive strings (``PASSWORDS``) so a test can look for them in everything the processes print.
- ``spawn``: runs ``kubenetmon <role> ...`` with its stderr in a file and an environment of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubenetmon.cli.natsserver import NatsServer, binary
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.chhttp import clickhouse_http  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "k8s/components/nats-server/nats.conf"
KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]
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


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
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


class SecureNats(NatsServer):
    """nats-server with the shipped configuration, TLS and required client certificates."""

    def __init__(self, store: Path, conf: Path, certs: Path) -> None:
        super().__init__(store)
        self.conf, self.certs = conf, certs

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        c = self.certs
        return [
            binary(),
            "-c",
            str(self.conf),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "--tlsverify",
            "--tlscert",
            str(c / "server.pem"),
            "--tlskey",
            str(c / "server.key"),
            "--tlscacert",
            str(c / "ca.pem"),
        ]


@pytest.fixture
def secure_nats(tmp_path: Path, certs: Path) -> Iterator[SecureNats]:
    text = CONF.read_text()
    conf = tmp_path / "nats.conf"
    conf.write_text(text.replace("store_dir: /data\n", f"store_dir: {tmp_path / 'js'}\n"))
    env = {"NATS_SERVER_NAME": "secure"} | {
        f"KUBENETMON_{role.removeprefix('kubenetmon-').upper()}_PASSWORD": pw
        for role, pw in PASSWORDS.items()
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        server = SecureNats(tmp_path / "nats", conf, certs)
        server.start()
    try:
        yield server
    finally:
        server.stop()


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
        for record in self.records():
            if str(record.get("msg", "")).startswith("serving /metrics"):
                return int(record["port"])
        return None

    def get(self, path: str) -> tuple[int, str]:
        port = self.port()
        if port is None:
            return 0, ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def wait(self, timeout: float = DEADLINE_S) -> int:
        return self.popen.wait(timeout)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*argv: str, env: dict[str, str] | None = None, name: str = "") -> Proc:
        name = name or argv[0]
        n = len(procs)
        out, err = tmp_path / f"{name}-{n}.out", tmp_path / f"{name}-{n}.err"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBENETMON_")} | (env or {})
        with out.open("wb") as o, err.open("wb") as e:
            popen = subprocess.Popen([*KUBENETMON, *argv], stdout=o, stderr=e, env=clean, cwd=ROOT)
        procs.append(Proc(name, popen, out, err))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(30)
