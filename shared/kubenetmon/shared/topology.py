"""The JetStream topology kubenetmon needs, as plain data: names, subjects, desired configs, and the diff.

Four streams, all with *limits* retention (never work-queue: replay needs the history):

- ``{stream_prefix}_RAW``       subjects ``{subject_prefix}.raw.>``      (agent -> enricher)
- ``{stream_prefix}_ENRICHED``  subjects ``{subject_prefix}.enriched.>`` (enricher -> writer)
- ``{stream_prefix}_DLQ``       subjects ``{subject_prefix}.dlq.>``      (every stage's poison)
- ``{stream_prefix}_META``      subjects ``{subject_prefix}.meta.>``     (Kubernetes metadata history,
  recorded by the enrichers, read by ``replay raw --metadata as-of``)

Each has a ``max_age`` and a ``max_bytes`` below the server's store, and the ``new`` discard policy: a
full stream refuses a publish (the publisher keeps the message and sends it again) instead of deleting
its oldest messages, which a consumer may not have read yet. Both limits change in place.

and two durable pull consumers shared by every worker of every pod: ``enricher`` on RAW and ``writer``
on ENRICHED, explicit ack, bounded ``max_ack_pending`` and a redelivery backoff. The server never gives
up on a message (``SERVER_MAX_DELIVER``): the workers count deliveries and dead-letter at ``max_deliver``.
The ``metadata`` role adds a key-value bucket ``{stream_prefix}_metadata`` (its lease and the
position of the latest META snapshot), created by that role itself.

This module is pure: the broker module turns these specs into client calls and reports what it did
with ``Change`` records. Comparing desired and actual configs happens here so it can be tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kubenetmon.shared import backoff
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.settings import NatsSettings

RAW: Final = "raw"
ENRICHED: Final = "enriched"
DLQ: Final = "dlq"
META: Final = "meta"
KINDS: Final = (RAW, ENRICHED, DLQ, META)
BUCKETS: Final = ("metadata",)
"""Key-value buckets (created by the roles that write them, deleted with the topology)."""
CONSUMERS: Final[dict[str, str]] = {"enricher": RAW, "writer": ENRICHED}
"""Durable consumer name -> the stream kind it reads."""

_NOT_TOKEN: Final = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(text: str) -> str:
    """One subject token from free text (a node name may contain dots): other characters become ``_``."""
    return _NOT_TOKEN.sub("_", text) or "_"


def stream_name(settings: NatsSettings, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown stream kind {kind!r}")
    return f"{settings.stream_prefix}_{kind.upper()}"


def bucket_name(settings: NatsSettings, name: str) -> str:
    """Name of key-value bucket ``name`` (its stream is ``KV_<bucket>``, its subjects ``$KV.<bucket>.>``)."""
    return f"{settings.stream_prefix}_{subject_token(name)}"


def bucket_stream(settings: NatsSettings, name: str) -> str:
    """The stream that holds key-value bucket ``name`` (JetStream's own naming)."""
    return f"KV_{bucket_name(settings, name)}"


def stream_subjects(settings: NatsSettings, kind: str) -> str:
    return f"{settings.subject_prefix}.{kind}.>"


def raw_subject(settings: NatsSettings, node: str) -> str:
    return f"{settings.subject_prefix}.{RAW}.{subject_token(node)}"


def agent_inbox(node: str) -> str:
    """Reply subject prefix of ``node``'s agent under a per-node identity (auth callout): only it may
    subscribe there, so no agent reads another's acknowledgements. Inside the shared agent user's
    ``_INBOX_kubenetmon-agent.>``, so the same agent also works with that user."""
    return f"_INBOX_kubenetmon-agent.{subject_token(node)}"


def enriched_subject(settings: NatsSettings, node: str) -> str:
    return f"{settings.subject_prefix}.{ENRICHED}.{subject_token(node)}"


def dlq_subject(settings: NatsSettings, stage: str) -> str:
    return f"{settings.subject_prefix}.{DLQ}.{subject_token(stage)}"


def meta_subject(settings: NatsSettings, resource: str) -> str:
    """Subject of the metadata history records of one resource (``pods``, ``nodes``, ``services``)."""
    return f"{settings.subject_prefix}.{META}.{subject_token(resource)}"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    replicas: int
    duplicate_window_s: float
    storage: str
    retention: str = "limits"
    discard: str = "new"
    """A full stream refuses new messages: "old" would delete the oldest, consumed or not."""
    compression: str = "none"
    """``s2`` or ``none``: how the server stores message blocks (file storage only)."""

    def comparable(self) -> dict[str, object]:
        return {
            "subjects": tuple(sorted(self.subjects)),
            "retention": self.retention,
            "storage": self.storage,
            "compression": self.compression,
            "discard": self.discard,
            "max_age_s": round(self.max_age_s, 3),
            "max_bytes": self.max_bytes,
            "replicas": self.replicas,
            "duplicate_window_s": round(self.duplicate_window_s, 3),
        }


STREAM_IMMUTABLE: Final = frozenset({"storage", "retention"})
SERVER_MAX_DELIVER: Final = -1
"""The server redelivers without limit; ``--nats-max-deliver`` is enforced by the workers (``consumer``).
A server that gave up after N deliveries would silently drop a message whose last delivery could not be
dead-lettered (the DLQ unavailable) or was never settled (its worker killed): it would never come back."""


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int
    backoff_s: tuple[float, ...]
    ack_policy: str = "explicit"
    deliver_policy: str = "all"

    def comparable(self) -> dict[str, object]:
        return {
            "filter_subject": self.filter_subject,
            "ack_policy": self.ack_policy,
            "deliver_policy": self.deliver_policy,
            "ack_wait_s": round(self.ack_wait_s, 3),
            "max_deliver": self.max_deliver,
            "max_ack_pending": self.max_ack_pending,
            "backoff_s": tuple(round(b, 3) for b in self.backoff_s),
        }


CONSUMER_IMMUTABLE: Final = frozenset({"ack_policy", "deliver_policy"})


def stream_specs(settings: NatsSettings) -> tuple[StreamSpec, ...]:
    def spec(kind: str, max_age_s: float, max_bytes: int) -> StreamSpec:
        return StreamSpec(
            name=stream_name(settings, kind),
            subjects=(stream_subjects(settings, kind),),
            max_age_s=max_age_s,
            max_bytes=max_bytes,
            replicas=settings.replicas,
            duplicate_window_s=settings.duplicate_window_s,
            storage=settings.storage,
            compression=compression(settings.storage),
        )

    return (
        spec(RAW, settings.raw_max_age_s, settings.raw_max_bytes),
        spec(ENRICHED, settings.enriched_max_age_s, settings.enriched_max_bytes),
        spec(DLQ, settings.dlq_max_age_s, settings.dlq_max_bytes),
        spec(META, settings.meta_max_age_s, settings.meta_max_bytes),
    )


def compression(storage: str) -> str:
    """File streams are stored S2-compressed: a few percent of the server's CPU for a store several
    times smaller (``docs/capacity.md``); the server changes it in place, and compresses only blocks
    written afterwards. Memory streams cannot be compressed."""
    return "s2" if storage == "file" else "none"


def server_backoff(settings: NatsSettings) -> tuple[float, ...]:
    """Redelivery delays the server applies when a worker vanished without settling (no nak was sent).

    The server takes the first entry as the ack wait, so no entry may be shorter than ``ack_wait_s``:
    a slow but live worker keeps its full ack wait, and a dead one's messages come back later and later.
    """
    return backoff.at_least(settings.backoff_s, floor_s=settings.ack_wait_s)


def consumer_spec(settings: NatsSettings, durable: str) -> ConsumerSpec:
    kind = CONSUMERS.get(durable)
    if kind is None:
        raise ConfigError(f"unknown durable consumer {durable!r}; known: {', '.join(CONSUMERS)}")
    return ConsumerSpec(
        stream=stream_name(settings, kind),
        durable=durable,
        filter_subject=stream_subjects(settings, kind),
        ack_wait_s=settings.ack_wait_s,
        max_deliver=SERVER_MAX_DELIVER,
        max_ack_pending=settings.max_ack_pending,
        backoff_s=server_backoff(settings),
    )


def consumer_specs(settings: NatsSettings) -> tuple[ConsumerSpec, ...]:
    return tuple(consumer_spec(settings, name) for name in CONSUMERS)


def diff(desired: Mapping[str, object], actual: Mapping[str, object]) -> tuple[str, ...]:
    """Human-readable differences ``field: actual -> desired``, in field order."""
    return tuple(
        f"{key}: {actual.get(key)!r} -> {value!r}"
        for key, value in desired.items()
        if actual.get(key) != value
    )


def immutable_fields(
    desired: Mapping[str, object], actual: Mapping[str, object], *, kind: str
) -> tuple[str, ...]:
    """The differing fields that cannot be changed in place (the object must be recreated by hand)."""
    frozen = CONSUMER_IMMUTABLE if kind == "consumer" else STREAM_IMMUTABLE  # a bucket is a stream
    return tuple(key for key in desired if key in frozen and actual.get(key) != desired[key])


@dataclass(frozen=True)
class Change:
    """What ``ensure_topology`` (or ``ensure_bucket``) did with one stream, consumer or bucket."""

    kind: str
    """``stream``, ``consumer`` or ``bucket``."""
    name: str
    action: str
    """``created``, ``updated``, ``unchanged`` or ``conflict`` (drifted and not reconcilable in place)."""
    details: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.kind} {self.name}: {self.action}"
        return f"{text} ({'; '.join(self.details)})" if self.details else text


@dataclass(frozen=True)
class TopologyReport:
    changes: tuple[Change, ...]

    @property
    def conflicts(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action == "conflict")

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def lines(self) -> list[str]:
        return [c.line() for c in self.changes]

    def raise_for_conflicts(self) -> None:
        """``ConfigError`` listing every conflict: a service must not run against a topology it cannot fix."""
        if self.conflicts:
            raise ConfigError(
                "JetStream topology drifted and cannot be reconciled in place: "
                + " | ".join(c.line() for c in self.conflicts)
            )
