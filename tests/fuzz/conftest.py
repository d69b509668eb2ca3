"""The pipeline for bad-input tests: a nats-server that takes big messages, a running enricher and writer.

The server accepts payloads up to 16 MiB (twice the decoders' 8 MiB limit), so messages the decoders
refuse as ``oversized`` can still be published. The enricher and the writer are the real
``kubenetmon`` commands (supervisor + one worker each), with ``/metrics`` on a free loopback port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.nats import nats_settings_for
from tests.support.commands import KUBENETMON
from tests.support.enricher import NODES, PODS, SERVICES
from tests.support.fuzz import SERVER_MAX_PAYLOAD, Role
from tests.support.processes import Process


@pytest.fixture
def big_nats(make_nats_server: Callable[..., NatsServer], tmp_path: Path) -> NatsServer:
    conf = tmp_path / "big.conf"
    conf.write_text(f"max_payload: {SERVER_MAX_PAYLOAD}\n")
    return make_nats_server(extra_args=("-c", str(conf)))


@pytest.fixture
def fuzz_nats(big_nats: NatsServer) -> NatsSettings:
    # The corpus dead-letters about 40 MB (two 8 MiB messages, two of megabytes, some 11k small ones): a DLQ
    # without room holds the last poison messages (nak'ed until there is room, never dropped), so it could
    # never drain. This server is the test's own: it can reserve the shipped default.
    return nats_settings_for(
        big_nats, ack_wait_s=15.0, max_deliver=5, backoff_s=(0.1, 0.5, 1.0), dlq_max_bytes=256 * 1024**2
    )


@pytest.fixture
async def broker_for_fuzz(fuzz_nats: NatsSettings) -> AsyncIterator[Broker]:
    async with await Broker.connect(fuzz_nats, name="fuzz", wait_s=5) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        yield broker


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*NODES, *PODS, *SERVICES]}))
    return path


@pytest.fixture
def start_role(tmp_path: Path) -> Iterator[Callable[..., Role]]:
    roles: list[Role] = []

    def start(name: str, *argv: str) -> Role:
        common = ["--http-host", "127.0.0.1", "--http-port", "0", "--log-format", "json"]
        proc = Process([*KUBENETMON, name, *argv, *common], log_path=tmp_path / f"{name}-{len(roles)}.log")
        roles.append(Role(name, proc))
        return roles[-1]

    yield start
    for role in roles:
        role.proc.kill()
