"""JetStream topology against a real nats-server: creation, idempotence, reconciliation, conflicts."""

from __future__ import annotations

import dataclasses

import nats
import nats.js.errors
import pytest

from kubenetmon.shared import topology
from kubenetmon.shared.broker import Broker, reconcile
from kubenetmon.shared.errors import ConfigError, TransientError
from kubenetmon.shared.settings import NatsSettings

_NO_PEERS = "no suitable peers for placement"


async def test_init_creates_everything_then_is_a_noop(nats_settings: NatsSettings) -> None:
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        first = await broker.ensure_topology()
        assert [(c.kind, c.action) for c in first.changes] == [("stream", "created")] * 4 + [
            ("consumer", "created")
        ] * 2
        second = await broker.ensure_topology()
        assert not second.changed
        assert {c.action for c in second.changes} == {"unchanged"}
        raw = await broker.stream_info(topology.RAW)
        assert raw.name == f"{nats_settings.stream_prefix}_RAW"
        assert raw.consumer_count == 1


async def test_changed_max_age_and_ack_pending_are_applied(nats_settings: NatsSettings) -> None:
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
    changed = dataclasses.replace(nats_settings, raw_max_age_s=7200.0, max_ack_pending=77)
    async with await Broker.connect(changed, name="t", wait_s=5) as broker:
        report = await broker.ensure_topology()
        actions = {c.name: c for c in report.changes}
        raw = actions[f"{changed.stream_prefix}_RAW"]
        assert raw.action == "updated"
        assert raw.details == ("max_age_s: 3600.0 -> 7200.0",)
        assert actions[f"{changed.stream_prefix}_ENRICHED"].action == "unchanged"
        assert actions[f"{changed.stream_prefix}_RAW/enricher"].details == ("max_ack_pending: 1000 -> 77",)
        again = await broker.ensure_topology()
        assert not again.changed
        assert (await broker.consumer_info("enricher")).num_pending == 0


async def test_a_consumer_that_gives_up_is_updated_in_place_to_one_that_never_does(
    nats_settings: NatsSettings,
) -> None:
    # Consumers created by an older release stopped delivering at --nats-max-deliver; the workers count
    # deliveries now, and an upgrade lifts the server's limit in place, keeping the consumers' positions.
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
        await broker.publish(broker.raw_subject("n1"), b"waiting", msg_id="w")
    nc = await nats.connect(nats_settings.urls[0])
    try:
        js = nc.jetstream()
        for spec in topology.consumer_specs(nats_settings):
            old = dataclasses.replace(spec, max_deliver=nats_settings.max_deliver)
            await js.add_consumer(spec.stream, config=reconcile._consumer_config(old))
        async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
            report = await broker.ensure_topology()
            consumers = [c for c in report.changes if c.kind == "consumer"]
            assert [(c.action, c.details) for c in consumers] == [
                ("updated", (f"max_deliver: {nats_settings.max_deliver} -> -1",))
            ] * 2
            assert (await broker.consumer_info("enricher")).num_pending == 1
        for spec in topology.consumer_specs(nats_settings):
            assert (await js.consumer_info(spec.stream, spec.durable)).config.max_deliver == -1
    finally:
        await nc.close()


async def test_streams_of_an_older_release_are_compressed_in_place_keeping_their_messages(
    nats_settings: NatsSettings,
) -> None:
    # Streams created before compression was set: `nats init` (or a role's start) turns S2 on in place.
    nc = await nats.connect(nats_settings.urls[0])
    try:
        js = nc.jetstream()
        for spec in topology.stream_specs(nats_settings):
            await js.add_stream(
                config=reconcile._stream_config(dataclasses.replace(spec, compression="none"))
            )
        async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
            await broker.publish(broker.raw_subject("n1"), b"kept", msg_id="k")
            report = await broker.ensure_topology()
            streams = [c for c in report.changes if c.kind == "stream"]
            assert [(c.action, c.details) for c in streams] == [
                ("updated", ("compression: 'none' -> 's2'",))
            ] * 4
            assert not (await broker.ensure_topology()).changed
            assert (await broker.stream_info(topology.RAW)).messages == 1
        for spec in topology.stream_specs(nats_settings):
            assert (await js.stream_info(spec.name)).config.compression == "s2"
    finally:
        await nc.close()


def test_only_file_streams_are_compressed(nats_settings: NatsSettings) -> None:
    assert {s.compression for s in topology.stream_specs(nats_settings)} == {"s2"}
    in_memory = dataclasses.replace(nats_settings, storage="memory")
    assert {s.compression for s in topology.stream_specs(in_memory)} == {"none"}


async def test_storage_change_is_reported_as_conflict(nats_settings: NatsSettings) -> None:
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
    in_memory = dataclasses.replace(nats_settings, storage="memory")
    async with await Broker.connect(in_memory, name="t", wait_s=5) as broker:
        report = await broker.ensure_topology()
        assert len(report.conflicts) == 4
        assert all("storage" in " ".join(c.details) for c in report.conflicts)
        with pytest.raises(ConfigError, match="cannot be reconciled"):
            report.raise_for_conflicts()


async def test_replicas_the_server_cannot_host_are_a_conflict(nats_settings: NatsSettings) -> None:
    async with await Broker.connect(nats_settings, name="t", wait_s=5) as broker:
        await broker.ensure_topology()
    three = dataclasses.replace(nats_settings, replicas=3)
    async with await Broker.connect(three, name="t", wait_s=5) as broker:
        report = await broker.ensure_topology()
        conflicts = [c for c in report.conflicts if c.kind == "stream"]
        assert len(conflicts) == 4
        assert all("server refused" in c.details[-1] for c in conflicts)


def test_names_and_subjects() -> None:
    s = NatsSettings(stream_prefix="KNM", subject_prefix="a.b")
    names = ["KNM_RAW", "KNM_ENRICHED", "KNM_DLQ", "KNM_META"]
    assert [spec.name for spec in topology.stream_specs(s)] == names
    assert [spec.subjects for spec in topology.stream_specs(s)] == [
        ("a.b.raw.>",),
        ("a.b.enriched.>",),
        ("a.b.dlq.>",),
        ("a.b.meta.>",),
    ]
    assert topology.raw_subject(s, "ip-10-0-0-1.ec2.internal") == "a.b.raw.ip-10-0-0-1_ec2_internal"
    assert topology.enriched_subject(s, "n1") == "a.b.enriched.n1"
    assert topology.dlq_subject(s, "writer") == "a.b.dlq.writer"
    assert topology.meta_subject(s, "pods") == "a.b.meta.pods"
    assert all(spec.retention == "limits" for spec in topology.stream_specs(s))
    enricher = topology.consumer_spec(s, "enricher")
    assert (enricher.stream, enricher.filter_subject, enricher.ack_policy) == (
        "KNM_RAW",
        "a.b.raw.>",
        "explicit",
    )
    with pytest.raises(ConfigError, match="unknown durable consumer"):
        topology.consumer_spec(s, "nobody")


def test_server_backoff_never_shortens_the_ack_wait() -> None:
    s = NatsSettings(ack_wait_s=30.0, backoff_s=(1.0, 5.0, 60.0))
    assert topology.server_backoff(s) == (30.0, 30.0, 60.0)


def test_diff_reports_each_field() -> None:
    desired = {"a": 1, "b": "x", "storage": "file"}
    actual = {"a": 2, "b": "x", "storage": "memory"}
    assert topology.diff(desired, actual) == ("a: 2 -> 1", "storage: 'memory' -> 'file'")
    assert topology.immutable_fields(desired, actual, kind="stream") == ("storage",)


def _bad_request(err_code: int, description: str) -> nats.js.errors.APIError:
    return nats.js.errors.BadRequestError(code=400, err_code=err_code, description=description)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        # a member restarting, not yet back in the meta leader's view: asking again succeeds
        (_bad_request(10005, _NO_PEERS + ", peer offline"), True),
        # JetStream itself not available right now
        (nats.js.errors.ServiceUnavailableError(code=503, err_code=10008, description="unavailable"), True),
        # the configuration: more replicas than servers, no storage, another stream's subjects
        (_bad_request(10005, _NO_PEERS + ", insufficient resources"), False),
        (_bad_request(10074, "replicas > 1 not supported in non-clustered mode"), False),
        (_bad_request(10065, "subjects overlap with an existing stream"), False),
    ],
)
async def test_a_refusal_for_now_is_transient_and_any_other_a_conflict(
    error: nats.js.errors.APIError, transient: bool
) -> None:
    async def refuse() -> None:
        raise error

    if transient:
        with pytest.raises(TransientError, match=r"^stream S: (BadRequest|ServiceUnavailable)Error"):
            await reconcile._create("stream", "S", refuse)
        with pytest.raises(TransientError):
            await reconcile._reconcile("stream", "S", {"replicas": 3}, {"replicas": 1}, refuse)
    else:
        assert (await reconcile._create("stream", "S", refuse)).action == "conflict"
        changed = await reconcile._reconcile("stream", "S", {"replicas": 3}, {"replicas": 1}, refuse)
        assert changed.action == "conflict"
