"""The broker against real nats-servers: dedup, auth, TLS, and surviving a broker restart."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import ConfigError, FatalError, TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.nats import nats_settings_for

DEADLINE_S = 20.0


async def test_same_msg_id_is_stored_once(broker: Broker) -> None:
    subject = broker.raw_subject("n1")
    first = await broker.publish(subject, b"a", msg_id="n1/boot/60/0/0")
    again = await broker.publish(subject, b"a", msg_id="n1/boot/60/0/0")
    other = await broker.publish(subject, b"b", msg_id="n1/boot/60/0/1")
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert again.seq == first.seq and other.seq == first.seq + 1
    assert (await broker.stream_info("raw")).messages == 2


async def test_publish_with_no_stream_behind_the_subject_is_transient(broker: Broker) -> None:
    with pytest.raises(TransientError, match=r"publish to nostream\.x failed"):
        await broker.publish("nostream.x", b"x", msg_id="x")


async def test_fetch_returns_nothing_on_timeout_and_deliveries_carry_metadata(broker: Broker) -> None:
    source = await broker.pull("enricher")
    assert await source.fetch(5, 0.2) == []
    await broker.publish(broker.raw_subject("n1"), b"x", msg_id="id-1", headers={"K": "v"})
    [d] = await source.fetch(5, DEADLINE_S)
    assert (d.data, d.msg_id, d.num_delivered, d.stream_seq, d.pending) == (b"x", "id-1", 1, 1, 0)
    assert d.headers["K"] == "v"
    assert d.stream == broker.stream_name("raw") and d.consumer == "enricher"
    assert d.timestamp > 1.7e9
    await d.in_progress()
    await d.ack()


async def test_a_connection_closed_for_good_is_fatal_not_retried_forever(nats_settings: NatsSettings) -> None:
    broker = await Broker.connect(nats_settings, name="test-lost")
    (await broker.ensure_topology()).raise_for_conflicts()
    source = await broker.pull("enricher")
    assert not broker.lost
    await broker._nc.close()  # as the client does when the server cuts it off and it gives up
    assert broker.lost
    with pytest.raises(FatalError, match="closed for good"):
        await source.fetch(1, 0.2)


async def test_pull_from_a_missing_consumer_says_what_to_do(nats_settings: NatsSettings) -> None:
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        with pytest.raises(ConfigError, match="kubenetmon nats init"):
            await broker.pull("writer")


async def test_replay_consumer_starts_at_a_sequence(broker: Broker) -> None:
    for i in range(5):
        await broker.publish(broker.raw_subject("n1"), b"%d" % i, msg_id=f"m{i}")
    source = await broker.ephemeral("raw", start_seq=3)
    got = await source.fetch(10, 2.0)
    assert [d.data for d in got] == [b"2", b"3", b"4"]
    await source.close()
    since_epoch = await broker.ephemeral("raw", start_time=0.0)
    assert len(await since_epoch.fetch(10, 2.0)) == 5


async def test_user_password_and_token_auth(make_nats_server: Callable[..., NatsServer]) -> None:
    with_user = make_nats_server(user="kubenetmon", password="s3cret")
    good = nats_settings_for(with_user, user="kubenetmon", password="s3cret")
    async with await Broker.connect(good, name="t", wait_s=5) as broker:
        assert not (await broker.ensure_topology()).conflicts
    with pytest.raises(TransientError, match="cannot connect"):
        await Broker.connect(dataclasses.replace(good, password="wrong"), name="t", wait_s=1.0)

    with_token = make_nats_server(token="t0ken")
    async with await Broker.connect(
        nats_settings_for(with_token, token="t0ken"), name="t", wait_s=5
    ) as broker:
        assert broker.connected


async def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    from kubenetmon.cli.natsserver import free_port

    settings = nats_settings_for(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="cannot connect"):
        await Broker.connect(settings, name="t", wait_s=0.5)


async def test_a_pending_connect_can_be_cancelled_and_bad_creds_are_a_config_error(tmp_path: Path) -> None:
    from kubenetmon.cli.natsserver import free_port

    settings = nats_settings_for(f"nats://127.0.0.1:{free_port()}")
    connecting = asyncio.create_task(Broker.connect(settings, name="t"))  # waits for a server forever
    done, _ = await asyncio.wait({connecting}, timeout=0.3)
    assert not done
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    missing = dataclasses.replace(settings, creds_file=str(tmp_path / "missing.creds"))
    with pytest.raises(ConfigError, match="--nats-creds"):
        await Broker.connect(missing, name="t", wait_s=1.0)


async def test_survives_a_broker_restart(
    make_nats_server: Callable[..., NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_nats_server()
    settings = nats_settings_for(server, publish_timeout_s=0.5)
    caplog.set_level(logging.INFO, logger="kubenetmon.shared.broker")
    async with await Broker.connect(settings, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
        source = await broker.pull("enricher")
        await broker.publish(broker.raw_subject("n"), b"before", msg_id="before")
        server.stop()
        with pytest.raises(TransientError):
            await broker.publish(broker.raw_subject("n"), b"lost?", msg_id="during")
        assert await source.fetch(1, 0.2) == []  # nothing, and no exception, while the broker is away
        server.start()
        async with asyncio.timeout(DEADLINE_S):
            while True:  # the client reconnects on its own; publish until the server answers again
                try:
                    await broker.publish(broker.raw_subject("n"), b"after", msg_id="after")
                    break
                except TransientError:
                    continue
        got: list[bytes] = []
        async with asyncio.timeout(DEADLINE_S):
            while b"after" not in got:
                got += [d.data for d in await source.fetch(10, 1.0)]
        assert got.count(b"before") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("disconnected" in m for m in messages) and any("reconnected" in m for m in messages)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path / "certs"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


async def test_mutual_tls(make_nats_server: Callable[..., NatsServer], certs: Path) -> None:
    server = make_nats_server(
        extra_args=(
            "--tlsverify",
            "--tlscert",
            str(certs / "server.pem"),
            "--tlskey",
            str(certs / "server.key"),
            "--tlscacert",
            str(certs / "ca.pem"),
        )
    )
    tls = nats_settings_for(
        server,
        tls_ca=str(certs / "ca.pem"),
        tls_cert=str(certs / "client.pem"),
        tls_key=str(certs / "client.key"),
    )
    async with await Broker.connect(tls, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
        assert (await broker.publish(broker.raw_subject("n"), b"x", msg_id="x")).seq == 1
    no_client_cert = dataclasses.replace(tls, tls_cert="", tls_key="")
    with pytest.raises(TransientError):
        await Broker.connect(no_client_cert, name="t", wait_s=1.0)
    with pytest.raises(ConfigError, match="--nats-tls"):
        await Broker.connect(
            dataclasses.replace(tls, tls_ca=str(certs / "missing.pem")), name="t", wait_s=1.0
        )


async def test_credentials_file(make_nats_server: Callable[..., NatsServer], tmp_path: Path) -> None:
    from tests.support import nats_jwt

    conf, creds = nats_jwt.setup(tmp_path)
    server = make_nats_server(extra_args=("-c", str(conf)))
    async with await Broker.connect(
        nats_settings_for(server, creds_file=str(creds)), name="t", wait_s=5
    ) as broker:
        assert not (await broker.ensure_topology()).conflicts
        assert (await broker.publish(broker.raw_subject("n"), b"x", msg_id="x")).seq == 1
    with pytest.raises(TransientError, match="cannot connect"):
        await Broker.connect(nats_settings_for(server), name="t", wait_s=1.0)
