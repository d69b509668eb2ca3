"""What the fuzzing found, pinned: sizes that used to blow up a stage or cut its connection.

- A RAW ``node`` or ``boot`` is repeated in every ENRICHED row: a 80 KB RAW message with a 20 KB node
  name enriched into 60 MB per part. The decoder now bounds both (a node name is a DNS subdomain).
- The server counts headers in its max payload and closes the whole connection when a message exceeds
  it; the client checks only the payload. A bad message within a few hundred bytes of the limit, sent
  to the DLQ with its headers, cut the worker's connection for good. ``Broker.publish`` now refuses it
  as ``oversized`` first, and the DLQ records the verdict without the body.
"""

from __future__ import annotations

import msgpack
import pytest

from kubenetmon.shared import schema
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import (
    H_OMITTED_BYTES,
    H_ORIGINAL_MSG_ID,
    H_REASON,
    H_STREAM_SEQ,
    Poison,
    settle,
)
from kubenetmon.shared.errors import DecodeError, PoisonError
from tests.fuzz import cases


def _raw(**changes: object) -> bytes:
    fields = {
        "v": 1,
        "t": "raw",
        "node": "n1",
        "boot": "b",
        "start": 60,
        "secs": 60,
        "seq": 0,
        "chunk": 0,
        "chunks": 1,
        "rows": [],
    }
    fields.update(changes)
    return msgpack.packb(fields)  # type: ignore[no-any-return]


@pytest.mark.parametrize("field", ["node", "boot"])
def test_node_and_boot_ids_are_bounded(field: str) -> None:
    limit = schema.MAX_NODE_LENGTH if field == "node" else schema.MAX_BOOT_LENGTH
    assert getattr(schema.decode_raw(_raw(**{field: "x" * limit})), field) == "x" * limit
    with pytest.raises(DecodeError) as refused:
        schema.decode_raw(_raw(**{field: "x" * (limit + 1)}))
    assert refused.value.reason == "schema" and "too long" in refused.value.detail


async def test_a_message_too_big_with_its_headers_is_refused_and_the_connection_stays(broker: Broker) -> None:
    limit = broker._nc.max_payload
    subject = broker.dlq_subject("test")
    with pytest.raises(PoisonError) as refused:
        await broker.publish(subject, b"x" * (limit - 100), msg_id="near", headers={"H": "y" * 200})
    assert refused.value.reason == "oversized"
    assert broker.connected
    fits = await broker.publish(subject, b"x" * (limit - 1000), msg_id="fits", headers={"H": "y" * 200})
    assert fits.seq == 1 and broker.connected


async def test_a_dead_letter_too_big_for_the_dlq_keeps_its_verdict_without_the_body(broker: Broker) -> None:
    limit = broker._nc.max_payload
    payload = cases.oversized("raw", limit - 64)  # fits alone, not with the DLQ's headers
    await broker.publish(broker.raw_subject("n1"), payload, msg_id="big/1")
    source = await broker.pull("enricher")
    [delivery] = await source.fetch(1, 10.0)
    assert await settle(broker, delivery, Poison("oversized", "test"), stage="enricher") == "dlq"
    assert broker.connected
    dlq = await broker.ephemeral("dlq")
    [entry] = await dlq.fetch(10, 10.0)
    assert entry.data == b""
    assert entry.headers[H_OMITTED_BYTES] == str(len(payload))
    assert entry.headers[H_REASON] == "oversized" and entry.headers[H_ORIGINAL_MSG_ID] == "big/1"
    assert entry.headers[H_STREAM_SEQ] == str(delivery.stream_seq)  # where the body still is
    info = await broker.consumer_info("enricher")
    assert info.num_pending == 0 and info.num_ack_pending == 0  # termed, never redelivered
