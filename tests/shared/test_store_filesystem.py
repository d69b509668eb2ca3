"""The JetStream store on a small filesystem of its own (a tmpfs mounted for the test, as root): what the
stream limits protect against, and what nats-server (2.15) does when the filesystem fills up anyway.

- A topology whose byte limits do not fit the server's store (``max_file_store``: 75% of the free space
  at start, or the configured value) is refused when it is created: ``nats init`` reports a conflict.
- One that fits fills its streams, never the filesystem: a full stream refuses (``StoreFullError``) and
  takes messages again once its limit is raised in place; no restart.
- A filesystem filled by something else is another matter: the stream's store gets a write error ("no
  space left on device"), publishes are no longer answered (timeouts, not "store full"), and freeing the
  space does not bring it back: nats-server must restart. Nothing stored is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import StoreFullError, TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.nats import nats_settings_for
from tests.support import http

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root only)")

MIB = 1024 * 1024
PAYLOAD = os.urandom(64 * 1024)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own, unmounted at the end."""
    mount = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def server(small_fs: Path) -> Iterator[NatsServer]:
    nats = NatsServer(small_fs / "store")
    nats.start()
    yield nats
    nats.stop()


def _limits(settings: NatsSettings, raw: int) -> NatsSettings:
    return dataclasses.replace(
        settings, raw_max_bytes=raw, enriched_max_bytes=2 * MIB, dlq_max_bytes=MIB, meta_max_bytes=MIB
    )


def _fill_up(path: Path) -> None:
    """Write ``path`` until its filesystem has no space left."""
    try:
        with path.open("wb", buffering=0) as out:
            while True:
                out.write(b"\0" * MIB)
    except OSError:
        pass


async def _fill(broker: Broker, tag: str) -> int:
    for i in range(1000):
        try:
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id=f"{tag}/{i}")
        except StoreFullError:
            return i
    raise AssertionError("RAW never filled up")


async def test_limits_that_do_not_fit_the_store_are_refused_when_created(server: NatsServer) -> None:
    settings = nats_settings_for(server, raw_max_bytes=64 * MIB)  # the store is 12 MiB (75% of 16)
    async with await Broker.connect(settings, name="init", wait_s=5.0) as broker:
        report = await broker.ensure_topology()
    (raw,) = [c for c in report.conflicts if c.name.endswith("_RAW")]
    assert "insufficient storage resources" in raw.line()


async def test_a_stream_fills_before_the_filesystem_and_takes_again_with_a_larger_limit(
    server: NatsServer, small_fs: Path
) -> None:
    settings = _limits(nats_settings_for(server), raw=4 * MIB)
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        taken = await _fill(broker, "a")
        assert os.statvfs(small_fs).f_bavail > 0  # the filesystem has room: the stream's limit refused
        raised = _limits(settings, raw=6 * MIB)
        async with await Broker.connect(raised, name="admin", wait_s=5.0) as admin:
            (await admin.ensure_topology()).raise_for_conflicts()
        more = await _fill(broker, "b")
        assert more > 0 and (await broker.stream_info("raw")).messages == taken + more


async def test_a_filesystem_filled_by_something_else_wedges_the_stream_until_the_server_restarts(
    server: NatsServer, small_fs: Path
) -> None:
    settings = _limits(nats_settings_for(server, publish_timeout_s=1.0), raw=4 * MIB)
    filler = small_fs / "filler"
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        (await broker.ensure_topology()).raise_for_conflicts()
        for i in range(10):
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id=f"before/{i}")
        await asyncio.to_thread(_fill_up, filler)
        with pytest.raises(TransientError) as refused:
            await _fill(broker, "full")
        assert not isinstance(refused.value, StoreFullError)  # no answer at all: a timeout
        filler.unlink()
        with pytest.raises(TransientError):  # space is back, the stream's store is not
            await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id="after-free")
    assert "no space left on device" in server.log_tail()
    # the server's full health check says so (a liveness probe on it restarts a wedged server); the
    # check of JetStream alone, the shipped probe's, does not
    assert http.get(server.monitor_port, "/healthz", timeout=5)[0] == 503
    assert http.get(server.monitor_port, "/healthz?js-enabled-only=true", timeout=5)[0] == 200
    server.restart()
    async with await Broker.connect(settings, name="test", wait_s=5.0) as broker:
        await broker.publish(broker.raw_subject("n1"), PAYLOAD, msg_id="after-restart")
        assert (await broker.stream_info("raw")).messages >= 11  # what was stored before is all there
