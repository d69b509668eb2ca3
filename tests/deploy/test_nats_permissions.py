"""The per-role NATS permissions of the shipped server configuration, against a real nats-server.

The server runs the very ``nats.conf`` that the dev overlay and the compose stack use (only its store
directory is moved to a temporary one). Each role then does, through kubenetmon's own broker module,
what that role does in production, and is refused what it must not do: a refused publish or request is
never answered, so it surfaces as a ``TransientError`` and changes nothing on the server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker, Delivery, Lease
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.support.commands import kubenetmon
from tests.support.natsconf import PASSWORDS, SERVER_ENV, ConfiguredNats, write_conf

# meant to keep the module on one worker so its module-scoped servers start once (docs/testing.md: open)
pytestmark = pytest.mark.xdist_group("nats-permissions")

DENIED_WAIT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredNats]:
    store = tmp_path_factory.mktemp("nats-permissions")
    conf = write_conf(store)  # single-tenant: the shared agent user (the callout: tests/security)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SERVER_ENV.items():
            mp.setenv(key, value)
        nats = ConfiguredNats(store, conf)
        nats.start()
    try:
        yield nats
    finally:
        nats.stop()


def role_settings(server: NatsServer, user: str, **overrides: object) -> NatsSettings:
    return replace(
        NatsSettings(),
        urls=(server.url,),
        user=user,
        password=PASSWORDS[user],
        publish_timeout_s=DENIED_WAIT_S,
        connect_timeout_s=2.0,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def initialised(server: ConfiguredNats) -> str:
    """``kubenetmon nats init`` as the admin user, as the init Job runs it."""
    env = {
        **os.environ,
        "KUBENETMON_NATS_URL": server.url,
        "KUBENETMON_NATS_USER": "kubenetmon-admin",
        "KUBENETMON_NATS_PASSWORD": PASSWORDS["kubenetmon-admin"],
    }
    out = kubenetmon("nats", "init", "--connect-wait", "10s", env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


async def connect(server: NatsServer, user: str) -> Broker:
    return await Broker.connect(role_settings(server, user), name=f"test-{user}", wait_s=5.0)


@pytest.fixture
async def admin(server: ConfiguredNats, initialised: str) -> AsyncIterator[Broker]:
    broker = await connect(server, "kubenetmon-admin")
    yield broker
    await broker.close()


async def settled(admin: Broker, consumer: str) -> None:
    """Wait (with a deadline) until ``consumer`` has nothing delivered-but-unsettled."""
    deadline = time.monotonic() + 5.0
    while (info := await admin.consumer_info(consumer)).num_ack_pending:
        assert time.monotonic() < deadline, f"{consumer}: acknowledgement never reached the server: {info}"
        await asyncio.sleep(0.02)  # polling the server for a condition, with a deadline


async def messages(admin: Broker, kind: str) -> int:
    return (await admin.stream_info(kind)).messages


async def assert_cannot_consume(broker: Broker, consumer: str, admin: Broker) -> None:
    """``broker`` gets nothing from ``consumer`` although a message waits there."""
    if (await admin.consumer_info(consumer)).num_pending == 0:
        kind = "raw" if consumer == "enricher" else "enriched"
        subject = admin.raw_subject("waiting") if kind == "raw" else admin.enriched_subject("waiting")
        await admin.publish(subject, b"waiting", msg_id=f"waiting/{consumer}/{time.monotonic_ns()}")
    try:
        source = await broker.pull(consumer)
        assert await source.fetch(1, DENIED_WAIT_S) == []
    except TransientError:
        pass  # refused before fetching: as good
    info = await admin.consumer_info(consumer)
    assert info.num_pending >= 1 and info.num_ack_pending == 0, info


def test_admin_creates_the_topology(initialised: str) -> None:
    lines = [line for line in initialised.splitlines() if line.startswith(("stream ", "consumer "))]
    assert len(lines) == 6 and all(line.endswith(("created", "unchanged")) for line in lines), initialised
    assert "bucket KUBENETMON_metadata: created" in initialised.splitlines()


@pytest.mark.parametrize(
    "user", ["kubenetmon-agent", "kubenetmon-enricher", "kubenetmon-writer", "kubenetmon-metadata"]
)
async def test_every_role_may_check_the_topology(server: ConfiguredNats, initialised: str, user: str) -> None:
    broker = await connect(server, user)
    try:
        report = await broker.ensure_topology()
    finally:
        await broker.close()
    assert not report.changed and not report.conflicts, report.lines()


async def counts(admin: Broker) -> dict[str, int]:
    return {kind: await messages(admin, kind) for kind in ("raw", "enriched", "dlq")}


async def consume(broker: Broker, consumer: str, admin: Broker, *, msg_id: str) -> None:
    """Fetch from ``consumer`` until ``msg_id`` came, ack everything fetched, see the acks land."""
    source = await broker.pull(consumer)
    got: list[Delivery] = []
    deadline = time.monotonic() + 10.0
    while not any(d.msg_id == msg_id for d in got) and time.monotonic() < deadline:
        got += await source.fetch(10, 1.0)
    assert any(d.msg_id == msg_id for d in got)
    for delivery in got:
        await delivery.ack()
    await settled(admin, consumer)


async def test_agent_publishes_raw_only(server: ConfiguredNats, admin: Broker) -> None:
    agent = await connect(server, "kubenetmon-agent")
    try:
        before = await counts(admin)
        result = await agent.publish(agent.raw_subject("node-a"), b"raw", msg_id="agent-test/1")
        assert result.stream == "KUBENETMON_RAW"
        for subject in (agent.enriched_subject("node-a"), agent.dlq_subject("agent")):
            with pytest.raises(TransientError):
                await agent.publish(subject, b"x", msg_id="agent-test/denied")
        assert await counts(admin) == {**before, "raw": before["raw"] + 1}
        await assert_cannot_consume(agent, "enricher", admin)
        await assert_cannot_consume(agent, "writer", admin)
    finally:
        await agent.close()


async def test_enricher_consumes_raw_and_publishes_enriched(server: ConfiguredNats, admin: Broker) -> None:
    await admin.publish(admin.raw_subject("node-b"), b"raw", msg_id="enricher-test/1")
    enricher = await connect(server, "kubenetmon-enricher")
    try:
        await consume(enricher, "enricher", admin, msg_id="enricher-test/1")
        before = await counts(admin)
        await enricher.publish(
            enricher.enriched_subject("node-b"), b"rows", msg_id="enriched/enricher-test/1"
        )
        await enricher.publish(enricher.dlq_subject("enricher"), b"poison", msg_id="dlq/enricher-test/1")
        await enricher.publish(enricher.meta_subject("pods"), b"history", msg_id="meta/enricher-test/1")
        for subject in (enricher.raw_subject("node-b"), enricher.dlq_subject("writer")):
            with pytest.raises(TransientError):  # the DLQ only under its own stage
                await enricher.publish(subject, b"x", msg_id="enricher-test/denied")
        assert await counts(admin) == {**before, "enriched": before["enriched"] + 1, "dlq": before["dlq"] + 1}
        await assert_cannot_consume(enricher, "writer", admin)
    finally:
        await enricher.close()


async def test_writer_consumes_enriched_only(server: ConfiguredNats, admin: Broker) -> None:
    await admin.publish(admin.enriched_subject("node-c"), b"rows", msg_id="writer-test/1")
    writer = await connect(server, "kubenetmon-writer")
    try:
        await consume(writer, "writer", admin, msg_id="writer-test/1")
        before = await counts(admin)
        await writer.publish(writer.dlq_subject("writer"), b"poison", msg_id="dlq/writer-test/1")
        denied = (
            writer.raw_subject("node-c"),
            writer.enriched_subject("node-c"),
            writer.dlq_subject("enricher"),
        )
        for subject in denied:
            with pytest.raises(TransientError):
                await writer.publish(subject, b"x", msg_id="writer-test/denied")
        assert await counts(admin) == {**before, "dlq": before["dlq"] + 1}
        await assert_cannot_consume(writer, "enricher", admin)
    finally:
        await writer.close()


@pytest.mark.parametrize(
    "user", ["kubenetmon-agent", "kubenetmon-enricher", "kubenetmon-writer", "kubenetmon-metadata"]
)
async def test_services_cannot_change_the_topology(server: ConfiguredNats, admin: Broker, user: str) -> None:
    """A service whose settings drifted from the topology must fail, not reconfigure the streams."""
    broker = await Broker.connect(
        role_settings(server, user, raw_max_age_s=3600.0), name=f"test-drift-{user}", wait_s=5.0
    )
    try:
        with pytest.raises(TransientError):
            await broker.ensure_topology()
    finally:
        await broker.close()
    report = await admin.ensure_topology()  # the admin's (default) settings: nothing to put back
    assert not report.changed, report.lines()


async def test_metadata_holds_the_lease_and_records_meta_only(server: ConfiguredNats, admin: Broker) -> None:
    metadata = await connect(server, "kubenetmon-metadata")
    try:
        bucket = await metadata.bucket("metadata", create=True)  # exists (nats init): bound, not created
        assert bucket is not None
        lease = Lease(bucket, key="lease", holder="metadata-test", ttl_s=15)
        assert await lease.attempt()
        stored = await metadata.publish(metadata.meta_subject("pods"), b"history", msg_id="meta/md-test/1")
        assert stored.stream == "KUBENETMON_META"
        assert await bucket.put("snapshot", b'{"seq": %d}' % stored.seq) > 0
        await lease.release()
        before = await counts(admin)
        for subject in (metadata.raw_subject("n"), metadata.enriched_subject("n"), metadata.dlq_subject("x")):
            with pytest.raises(TransientError):
                await metadata.publish(subject, b"x", msg_id="md-test/denied")
        assert await counts(admin) == before
        await assert_cannot_consume(metadata, "enricher", admin)
        await assert_cannot_consume(metadata, "writer", admin)
    finally:
        await metadata.close()


async def test_enricher_reads_meta_from_the_snapshot_but_writes_no_lease(
    server: ConfiguredNats, admin: Broker
) -> None:
    stored = await admin.publish(admin.meta_subject("nodes"), b"history", msg_id="meta/enricher-read/1")
    admin_bucket = await admin.bucket("metadata")
    assert admin_bucket is not None
    await admin_bucket.put("snapshot", b'{"seq": %d}' % stored.seq)
    enricher = await connect(server, "kubenetmon-enricher")
    try:
        bucket = await enricher.bucket("metadata")
        assert bucket is not None
        entry = await bucket.get("snapshot")
        assert entry is not None and entry.value == b'{"seq": %d}' % stored.seq
        source = await enricher.ephemeral("meta", start_seq=stored.seq)
        [delivery] = await source.fetch(1, 5.0)
        assert delivery.msg_id == "meta/enricher-read/1"
        await delivery.ack()
        await source.close()
        with pytest.raises(TransientError):
            await bucket.put("lease", b"enricher")
    finally:
        await enricher.close()
    lease = await admin_bucket.get("lease")
    assert lease is None or lease.value != b"enricher"


async def test_wrong_password_is_refused(server: ConfiguredNats) -> None:
    settings = replace(role_settings(server, "kubenetmon-agent"), password="wrong")
    with pytest.raises(TransientError):
        await Broker.connect(settings, name="test-wrong-password", wait_s=2.0)
