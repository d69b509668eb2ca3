"""The security tests' fixtures: session certificates, a TLS nats-server with per-role users, ``spawn``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.chhttp import clickhouse_http  # noqa: F401 (a fixture)
from tests.support.natsconf import write_conf
from tests.support.secure import PASSWORDS, Proc, SecureNats, make_certs, start


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def secure_nats(tmp_path: Path, certs: Path) -> Iterator[SecureNats]:
    conf = write_conf(tmp_path)
    env = {"NATS_SERVER_NAME": "secure", "KUBENETMON_AUTH_PASSWORD": "auth-Pw-unused"} | {
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


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def spawn_one(*argv: str, env: dict[str, str] | None = None, name: str = "") -> Proc:
        name = name or argv[0]
        procs.append(start([*argv], name=name, logs=tmp_path / f"{name}-{len(procs)}", env=env))
        return procs[-1]

    yield spawn_one
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(30)
