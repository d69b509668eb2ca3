"""Create or reconcile the JetStream topology described by ``topology``, and say what was done.

Each stream, durable consumer and key-value bucket is looked up; missing ones are created, drifted ones
updated in place, and a drift the server cannot apply in place (storage, retention, ack or deliver
policy, or anything the server refuses, such as more replicas than it has peers) is reported as a
``conflict``, never silently ignored. This module must not delete anything except on an explicit
``delete_topology``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import nats.js.errors
from nats.js import JetStreamContext, api

from kubenetmon.shared import topology as topo
from kubenetmon.shared.broker.connection import CLIENT_ERRORS, describe
from kubenetmon.shared.broker.kv import bucket_config
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings

log = logging.getLogger(__name__)


async def ensure_topology(js: JetStreamContext, settings: NatsSettings) -> topo.TopologyReport:
    changes = [await _ensure_stream(js, spec) for spec in topo.stream_specs(settings)]
    changes += [await _ensure_consumer(js, spec) for spec in topo.consumer_specs(settings)]
    report = topo.TopologyReport(tuple(changes))
    for change in report.changes:
        level = logging.ERROR if change.action == "conflict" else logging.INFO
        log.log(level, "topology %s", change.line())
    return report


async def ensure_bucket(js: JetStreamContext, settings: NatsSettings, name: str) -> topo.Change:
    """Create key-value bucket ``name``, or bring its replicas in line in place (a single server's
    bucket follows the streams to a cluster); a different storage is a conflict, as for a stream."""
    bucket = topo.bucket_name(settings, name)
    stream = topo.bucket_stream(settings, name)
    desired: dict[str, object] = {"replicas": settings.replicas, "storage": settings.storage}
    config = bucket_config(bucket, replicas=settings.replicas, storage=settings.storage)
    try:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return await _create("bucket", bucket, lambda: js.create_key_value(config))
        actual: dict[str, object] = {
            "replicas": info.config.num_replicas,
            "storage": _enum(info.config.storage),
        }
        scaled = dataclasses.replace(info.config, num_replicas=settings.replicas)
        return await _reconcile("bucket", bucket, desired, actual, lambda: js.update_stream(config=scaled))
    except CLIENT_ERRORS as exc:
        raise TransientError(f"bucket {bucket}: {describe(exc)}") from exc


async def delete_topology(js: JetStreamContext, settings: NatsSettings) -> None:
    names = [topo.stream_name(settings, kind) for kind in topo.KINDS]
    names += [topo.bucket_stream(settings, bucket) for bucket in topo.BUCKETS]
    for name in names:
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            continue
        except CLIENT_ERRORS as exc:
            raise TransientError(f"delete stream failed: {describe(exc)}") from exc


async def _ensure_stream(js: JetStreamContext, spec: topo.StreamSpec) -> topo.Change:
    config = _stream_config(spec)
    try:
        try:
            info = await js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            return await _create("stream", spec.name, lambda: js.add_stream(config=config))
        actual = _stream_comparable(info.config)
        return await _reconcile(
            "stream", spec.name, spec.comparable(), actual, lambda: js.update_stream(config=config)
        )
    except CLIENT_ERRORS as exc:
        raise TransientError(f"stream {spec.name}: {describe(exc)}") from exc


async def _ensure_consumer(js: JetStreamContext, spec: topo.ConsumerSpec) -> topo.Change:
    label = f"{spec.stream}/{spec.durable}"
    config = _consumer_config(spec)

    def put() -> Awaitable[object]:
        return js.add_consumer(spec.stream, config=config)

    try:
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            return await _create("consumer", label, put)
        actual = _consumer_comparable(info.config)
        return await _reconcile("consumer", label, spec.comparable(), actual, put)
    except CLIENT_ERRORS as exc:
        raise TransientError(f"consumer {label}: {describe(exc)}") from exc


_NO_PEERS: Final = 10005
"""JetStream's "no suitable peers for placement": with "peer offline", a member is restarting or not yet
known to the meta leader, and asking again succeeds; with any other reason (too few servers, storage,
tags) it is the configuration."""


def _refusal(exc: nats.js.errors.APIError, name: str) -> None:
    """Raise ``TransientError`` if the server refused only for now: JetStream unavailable (503), or a
    replica's peer offline; return if it refused the request itself (a conflict to report)."""
    offline = exc.err_code == _NO_PEERS and "peer offline" in (exc.description or "")
    if isinstance(exc, nats.js.errors.ServiceUnavailableError) or offline:
        raise TransientError(f"{name}: {describe(exc)}") from exc


async def _create(kind: str, name: str, call: Callable[[], Awaitable[object]]) -> topo.Change:
    try:
        await call()
    except nats.js.errors.APIError as exc:
        _refusal(exc, f"{kind} {name}")
        return topo.Change(kind, name, "conflict", (f"server refused to create it: {describe(exc)}",))
    return topo.Change(kind, name, "created")


async def _reconcile(
    kind: str,
    name: str,
    desired: dict[str, object],
    actual: dict[str, object],
    update: Callable[[], Awaitable[object]],
) -> topo.Change:
    changes = topo.diff(desired, actual)
    frozen = topo.immutable_fields(desired, actual, kind=kind)
    if not changes:
        return topo.Change(kind, name, "unchanged")
    if frozen:
        hint = f"{', '.join(frozen)} cannot change in place: delete and recreate the {kind}"
        return topo.Change(kind, name, "conflict", (*changes, hint))
    try:
        await update()
    except nats.js.errors.APIError as exc:
        _refusal(exc, f"{kind} {name}")
        return topo.Change(kind, name, "conflict", (*changes, f"server refused: {describe(exc)}"))
    return topo.Change(kind, name, "updated", changes)


def _stream_config(spec: topo.StreamSpec) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        description="kubenetmon " + spec.name.rsplit("_", 1)[-1].lower() + " messages",
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy(spec.retention),
        storage=api.StorageType(spec.storage),
        discard=api.DiscardPolicy(spec.discard),
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        num_replicas=spec.replicas,
        duplicate_window=spec.duplicate_window_s,
        compression=api.StoreCompression(spec.compression),
    )


def _stream_comparable(config: api.StreamConfig) -> dict[str, object]:
    return {
        "subjects": tuple(sorted(config.subjects or ())),
        "retention": _enum(config.retention),
        "storage": _enum(config.storage),
        "compression": _enum(config.compression) if config.compression else "none",
        "discard": _enum(config.discard),
        "max_age_s": round(config.max_age or 0.0, 3),
        "max_bytes": config.max_bytes,
        "replicas": config.num_replicas,
        "duplicate_window_s": round(config.duplicate_window or 0.0, 3),
    }


def _consumer_config(spec: topo.ConsumerSpec) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        description=f"kubenetmon {spec.durable} workers (shared by all of them)",
        deliver_policy=api.DeliverPolicy(spec.deliver_policy),
        ack_policy=api.AckPolicy(spec.ack_policy),
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        backoff=list(spec.backoff_s),
        filter_subject=spec.filter_subject,
    )


def _consumer_comparable(config: api.ConsumerConfig) -> dict[str, object]:
    return {
        "filter_subject": config.filter_subject,
        "ack_policy": _enum(config.ack_policy),
        "deliver_policy": _enum(config.deliver_policy),
        "ack_wait_s": round(config.ack_wait or 0.0, 3),
        "max_deliver": config.max_deliver,
        "max_ack_pending": config.max_ack_pending,
        "backoff_s": tuple(round(b, 3) for b in config.backoff or ()),
    }


def _enum(value: object) -> str:
    return str(getattr(value, "value", value))
