"""Per-role NATS permissions of the shipped ``nats.conf``: what the deploy tests leave out.

``tests/deploy/test_nats_permissions.py`` shows each role doing its job and refused the other roles'
streams. Here, over mutual TLS, each role is also refused what would let it read or destroy the data
of others: subscribing to other roles' replies (pulled messages arrive on an inbox: with a shared
``_INBOX.>``, any node's agent could read every flow the writers pull), reading streams directly
(``MSG.GET``, new consumers), acknowledging other consumers' messages (an agent acking RAW would make
enrichers skip it), purging or deleting streams, messages and consumers, and subjects outside the
``kubenetmon`` prefix.

A refusal is observed as the server's permissions violation for that very subject (the connection
stays up); a refused subscription also receives nothing.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from kubenetmon.shared.broker import Broker
from tests.support.secure import PASSWORDS, SecureNats, role_settings

ACK = "1.1.1.1.0"
"""The tail of a JetStream ack subject (delivered, stream and consumer sequences, time, pending)."""
DENIED_PUBLISH = {
    "kubenetmon-agent": [
        "other.raw.n1",
        "kubenetmon.meta.pods",
        "kubenetmon.enriched.n1",
        f"$JS.ACK.KUBENETMON_RAW.enricher.{ACK}",
        "$JS.API.CONSUMER.MSG.NEXT.KUBENETMON_RAW.enricher",
        "$JS.API.STREAM.MSG.GET.KUBENETMON_ENRICHED",
        "$JS.API.CONSUMER.CREATE.KUBENETMON_ENRICHED",
        "$JS.API.STREAM.PURGE.KUBENETMON_RAW",
        "$JS.API.STREAM.MSG.DELETE.KUBENETMON_RAW",
        "$JS.API.STREAM.DELETE.KUBENETMON_RAW",
        "$JS.API.CONSUMER.DELETE.KUBENETMON_RAW.enricher",
    ],
    "kubenetmon-enricher": [
        "kubenetmon.raw.n1",
        f"$JS.ACK.KUBENETMON_ENRICHED.writer.{ACK}",
        "$JS.API.CONSUMER.MSG.NEXT.KUBENETMON_ENRICHED.writer",
        "$JS.API.STREAM.MSG.GET.KUBENETMON_RAW",
        "$JS.API.CONSUMER.CREATE.KUBENETMON_DLQ",
        "$JS.API.STREAM.PURGE.KUBENETMON_ENRICHED",
        "$JS.API.STREAM.MSG.DELETE.KUBENETMON_DLQ",
    ],
    "kubenetmon-writer": [
        "kubenetmon.raw.n1",
        "kubenetmon.enriched.n1",
        "kubenetmon.meta.pods",
        f"$JS.ACK.KUBENETMON_RAW.enricher.{ACK}",
        "$JS.API.CONSUMER.MSG.NEXT.KUBENETMON_RAW.enricher",
        "$JS.API.STREAM.MSG.GET.KUBENETMON_RAW",
        "$JS.API.CONSUMER.CREATE.KUBENETMON_RAW",
        "$JS.API.STREAM.PURGE.KUBENETMON_RAW",  # ENRICHED's it may purge (trim what it stored)
        "$JS.API.CONSUMER.DELETE.KUBENETMON_ENRICHED.writer",
    ],
}
OTHER_INBOXES = {
    user: ["_INBOX.>", ">", "kubenetmon.>", *(f"_INBOX_{other}.>" for other in PASSWORDS if other != user)]
    for user in DENIED_PUBLISH
}
DEADLINE_S = 10.0


class Spy:
    """A raw client logged in as one role, recording the server's errors and what it receives."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors
        self.received: list[bytes] = []

    async def refused(self, subject: str, *, subscribe: bool = False) -> None:
        if subscribe:

            async def take(msg: Msg) -> None:
                self.received.append(msg.data)

            await self.nc.subscribe(subject, cb=take)
        else:
            await self.nc.publish(subject, b"forged")
        await self.nc.flush()
        kind = "subscription" if subscribe else "publish"
        wanted = f'permissions violation for {kind} to "{subject}"'
        async with asyncio.timeout(DEADLINE_S):
            while not any(wanted.lower() in e.lower() for e in self.errors):  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # polling for the server's answer, with a deadline


@pytest.fixture
async def admin(secure_nats: SecureNats, certs: Path) -> AsyncIterator[Broker]:
    async with await Broker.connect(
        role_settings(secure_nats, certs, "kubenetmon-admin"), name="admin", wait_s=5
    ) as b:
        (await b.ensure_topology()).raise_for_conflicts()
        yield b


@pytest.fixture
async def spy(secure_nats: SecureNats, certs: Path) -> AsyncIterator[Callable[[str], Awaitable[Spy]]]:
    clients: list[Client] = []

    async def login(user: str) -> Spy:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        nc = await nats.connect(
            secure_nats.url,
            user=user,
            password=PASSWORDS[user],
            tls=ctx,
            error_cb=on_error,
            inbox_prefix=f"_INBOX_{user}",
            allow_reconnect=False,
        )
        clients.append(nc)
        return Spy(nc, errors)

    yield login
    for nc in clients:
        await nc.close()


@pytest.mark.parametrize("user", sorted(DENIED_PUBLISH))
async def test_a_role_cannot_touch_the_data_of_others(
    admin: Broker, spy: Callable[[str], Awaitable[Spy]], user: str
) -> None:
    before = {kind: (await admin.stream_info(kind)).messages for kind in ("raw", "enriched", "dlq", "meta")}
    role = await spy(user)
    for subject in DENIED_PUBLISH[user]:
        await role.refused(subject)
    for subject in OTHER_INBOXES[user]:
        await role.refused(subject, subscribe=True)
    assert role.nc.is_connected  # refusals are not fatal: the role keeps doing its own job
    after = {kind: (await admin.stream_info(kind)).messages for kind in before}
    assert after == before
    for consumer in ("enricher", "writer"):
        info = await admin.consumer_info(consumer)
        assert info.num_ack_pending == 0 and info.ack_floor_stream_seq == 0  # nothing forged an ack


async def test_replies_to_one_role_are_private_to_it(
    admin: Broker, spy: Callable[[str], Awaitable[Spy]], secure_nats: SecureNats, certs: Path
) -> None:
    spies = {user: await spy(user) for user in ("kubenetmon-agent", "kubenetmon-enricher")}
    for role in spies.values():
        await role.refused("_INBOX.>", subscribe=True)
        await role.refused("_INBOX_kubenetmon-writer.>", subscribe=True)
    await admin.publish(admin.enriched_subject("n1"), b"rows of every node", msg_id="private/1")
    settings = role_settings(secure_nats, certs, "kubenetmon-writer")
    async with await Broker.connect(settings, name="writer", wait_s=5) as writer:
        source = await writer.pull("writer")
        [delivery] = await source.fetch(1, DEADLINE_S)
        assert delivery.data == b"rows of every node"
        await delivery.ack()
    for role in spies.values():
        await role.nc.flush()
        assert role.received == []
