"""JetStream key-value buckets and the lease built on them: one active replica at a time.

Why it exists: the ``metadata`` role runs as two replicas of which exactly one may list and watch the
API server, and its readers need one small shared pointer (where the latest META snapshot starts).
Both live in a key-value bucket; nats types stay in this package (``Entry`` is ours).

The lease is a compare-and-set on one key, with no shared clock: the holder rewrites the key every
``RENEW * ttl`` (``update`` against the revision it last wrote, so a holder that was replaced fails at
once); a contender checks every ``POLL * ttl``, remembers the revision it saw and when it first saw it (on
its own monotonic clock), and takes the key over (again by compare-and-set) once that revision has not
changed for ``TAKEOVER * ttl``. Since it first sees a revision at most one poll after it was written and
acts at most one poll late, a holder that died without releasing is replaced at most
``(TAKEOVER + 2 * POLL) * ttl`` = ``0.9 * ttl`` after its last renewal, so within the TTL of its death.
The holder considers itself deposed once it could not renew for ``STEP_DOWN * ttl``, measured from when
it *sent* its last successful renewal: that is before the revision was written, so it stops acting at
least ``(TAKEOVER - STEP_DOWN) * ttl`` before anyone can take over, a margin for clock rates and delays.

It must not decide what a holder does with its lease: the caller acts on ``held``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue as NatsKeyValue

from kubenetmon.shared.broker.connection import CLIENT_ERRORS, describe
from kubenetmon.shared.errors import TransientError

log = logging.getLogger(__name__)

STEP_DOWN: Final = 0.5
"""A holder that could not renew for this fraction of the TTL stops acting as the holder."""
RENEW: Final = 0.25
"""The holder renews every this fraction of the TTL (one failed renewal does not depose it)."""
TAKEOVER: Final = 0.7
"""A contender takes over a revision unchanged for this fraction of the TTL on its own clock."""
POLL: Final = 0.1
"""How often, as a fraction of the TTL, ``attempt`` runs."""


@dataclass(frozen=True, slots=True)
class Entry:
    """The value of a key and the revision (bucket stream sequence) that wrote it."""

    value: bytes
    revision: int


class KeyValue:
    """One bucket: get, put, and the two compare-and-set writes a lease needs."""

    def __init__(self, kv: NatsKeyValue, *, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    async def get(self, key: str) -> Entry | None:
        """The key's current value, or None if it was never written (or deleted)."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except CLIENT_ERRORS as exc:
            raise TransientError(f"get {self.bucket}/{key}: {describe(exc)}") from exc
        return Entry(entry.value or b"", int(entry.revision or 0))

    async def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new revision."""
        try:
            return int(await self._kv.put(key, value))
        except CLIENT_ERRORS as exc:
            raise TransientError(f"put {self.bucket}/{key}: {describe(exc)}") from exc

    async def create(self, key: str, value: bytes) -> int | None:
        """Write only if the key does not exist; the new revision, or None if it does."""
        try:
            return int(await self._kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except CLIENT_ERRORS as exc:
            raise TransientError(f"create {self.bucket}/{key}: {describe(exc)}") from exc

    async def update(self, key: str, value: bytes, *, last: int) -> int | None:
        """Write only if the key is still at revision ``last``; the new revision, or None if not."""
        try:
            return int(await self._kv.update(key, value, last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except CLIENT_ERRORS as exc:
            raise TransientError(f"update {self.bucket}/{key}: {describe(exc)}") from exc

    async def delete(self, key: str, *, last: int) -> bool:
        """Delete the key if it is still at revision ``last``."""
        try:
            return bool(await self._kv.delete(key, last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except CLIENT_ERRORS as exc:
            raise TransientError(f"delete {self.bucket}/{key}: {describe(exc)}") from exc


def bucket_config(bucket: str, *, replicas: int, storage: str) -> api.KeyValueConfig:
    """A bucket as kubenetmon makes it: one value per key (no history), the streams' replicas and storage."""
    return api.KeyValueConfig(
        bucket=bucket,
        history=1,
        replicas=replicas,
        storage=api.StorageType.MEMORY if storage == "memory" else api.StorageType.FILE,
    )


async def open_bucket(
    js: JetStreamContext, bucket: str, *, create: bool, replicas: int, storage: str
) -> KeyValue | None:
    """Bind to ``bucket``; create it if missing and ``create`` (else None when missing)."""
    try:
        return KeyValue(await js.key_value(bucket), bucket=bucket)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            return None
    except CLIENT_ERRORS as exc:
        raise TransientError(f"bucket {bucket}: {describe(exc)}") from exc
    try:
        kv = await js.create_key_value(bucket_config(bucket, replicas=replicas, storage=storage))
    except CLIENT_ERRORS as exc:
        raise TransientError(f"create bucket {bucket}: {describe(exc)}") from exc
    log.info("key-value bucket ready", extra={"bucket": bucket})
    return KeyValue(kv, bucket=bucket)


class Lease:
    """A named lease in a bucket; call ``attempt`` every ``poll_s`` seconds and act only while ``held``."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        key: str,
        holder: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock
        self.revision = 0
        """The revision we last wrote while holding, or 0."""
        self.term = 0
        """The revision at which we acquired the lease (grows with every takeover), or 0."""
        self._renewed_at = float("-inf")
        self._seen: tuple[int, float] = (0, 0.0)
        """(revision, first seen at) of someone else's lease."""

    @property
    def held(self) -> bool:
        """We hold it and renewed it recently enough to act."""
        return self.revision > 0 and self.clock() - self._renewed_at < STEP_DOWN * self.ttl_s

    @property
    def poll_s(self) -> float:
        """How often ``attempt`` should run (renewal and takeover checks)."""
        return POLL * self.ttl_s

    async def attempt(self) -> bool:
        """Renew the lease if we hold it, else take it if free or expired; returns ``held``.

        ``TransientError`` (NATS unreachable) leaves the state as it is: a holder keeps acting until
        ``held`` turns false on its own.
        """
        now = self.clock()
        if self.revision:
            if now - self._renewed_at < RENEW * self.ttl_s and self.held:
                return True
            revision = await self.kv.update(self.key, self._value(), last=self.revision)
            if revision is None:
                log.warning("lease %s lost: another holder took it", self.key)
                self.revision = self.term = 0
                return False
            self.revision, self._renewed_at = revision, now
            return self.held
        current = await self.kv.get(self.key)
        if current is None:
            revision = await self.kv.create(self.key, self._value())
        else:
            seen_revision, seen_at = self._seen
            if current.revision != seen_revision:
                self._seen = (current.revision, now)
                return False
            if now - seen_at < TAKEOVER * self.ttl_s:
                return False
            log.info("lease %s expired (held by %s); taking it over", self.key, _holder_of(current))
            revision = await self.kv.update(self.key, self._value(), last=current.revision)
        if revision is None:
            return False
        self.revision = self.term = revision
        self._renewed_at = now
        self._seen = (0, 0.0)
        return True

    async def release(self) -> None:
        """Give the lease up at once (a clean shutdown), so the standby need not wait for the TTL."""
        if not self.revision:
            return
        revision, self.revision, self.term = self.revision, 0, 0
        try:
            await self.kv.delete(self.key, last=revision)
        except TransientError as exc:
            log.warning("lease %s not released (it expires after its TTL): %s", self.key, exc)

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "ttl": self.ttl_s}).encode()


def _holder_of(entry: Entry) -> str:
    try:
        value: Any = json.loads(entry.value)
        return str(value.get("holder"))
    except (ValueError, AttributeError):
        return "?"
