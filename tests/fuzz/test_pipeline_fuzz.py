"""Bad input never stops the pipeline: over 10k generated bad messages fed to the running enricher and writer.

Hypothesis draws the cases in this process (``cases``): mutations of valid RAW and ENRICHED messages
(truncated, wrong version or kind, wrong types, bad rows and columns, invalid addresses, random bytes
and random msgpack, bit flips, deep nesting, lying length headers, trailing data), values the table
refuses, megabyte messages with one bad value at the end, and messages over the decoders' limit up to
the server's own. Good messages, with known bytes, are interleaved with them; some carry top-level fields
a newer version might add, which a consumer of the same major version ignores.

All of it is published in bulk to the streams that the real ``kubenetmon enricher`` and ``kubenetmon
writer`` processes consume. Then, exactly:

- every bad message is in the DLQ once, under its stage, with the reason its decoder gives (or
  ``invalid_batch`` for what the table refuses), and nothing else is there; each entry holds the
  original message, except the two that the server takes only without the DLQ's headers (their size);
- every good message is stored: row counts and byte sums through the exact view equal the known ones;
- no process died: the same pids at the end, no respawn, every worker ready.

Set ``KUBENETMON_FUZZ_SEED`` to replay a run; the seed is in every failure message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from kubenetmon.shared.broker import Broker
from kubenetmon.shared.consumer import H_OMITTED_BYTES, H_ORIGINAL_MSG_ID, H_REASON, H_STAGE
from kubenetmon.shared.schema import MAX_MESSAGE_BYTES
from kubenetmon.shared.settings import NatsSettings
from kubenetmon.writer.settings import ClickHouseSettings
from tests.fuzz import cases, cases_enriched, cases_raw
from tests.fuzz.cases import Case
from tests.support import KUBENETMON, eventually
from tests.support.fuzz import SERVER_MAX_PAYLOAD, Role, enricher_args, writer_args

SEED = int(os.environ.get("KUBENETMON_FUZZ_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 31)
BAD_EXAMPLES = 1700
"""Hypothesis examples per stream; each yields 1 to ``cases.MUTATIONS`` bad messages."""
GOOD_EXAMPLES = 300
REJECTED_EXAMPLES = 40
SETTLE_S = 240.0


def generate() -> tuple[list[Case], list[Case]]:
    """(RAW cases, ENRICHED cases), bad and good shuffled together."""
    bad_raw = [
        c for group in cases.collect(cases_raw.bad_raw(), BAD_EXAMPLES, seed_value=SEED) for c in group
    ]
    bad_enriched = [
        c
        for group in cases.collect(cases_enriched.bad_enriched(), BAD_EXAMPLES, seed_value=SEED)
        for c in group
    ]
    bad_enriched += cases.collect(cases_enriched.rejected_enriched(), REJECTED_EXAMPLES, seed_value=SEED)
    good_raw = [
        cases_raw.finish_raw(d, k)
        for k, d in enumerate(cases.collect(cases_raw.good_raw(), GOOD_EXAMPLES, seed_value=SEED))
    ]
    good_enriched = [
        cases_enriched.finish_enriched(d, k)
        for k, d in enumerate(cases.collect(cases_enriched.good_enriched(), GOOD_EXAMPLES, seed_value=SEED))
    ]
    raw = [
        *bad_raw,
        *good_raw,
        cases_raw.big_good_raw(20_000, key=10**6),
        cases_raw.big_raw_bad_tail(100_000),
    ]
    enriched = [*bad_enriched, *good_enriched, cases_enriched.big_enriched_bad_tail(300_000)]
    for kind, out in (("raw", raw), ("enriched", enriched)):
        out += [
            Case(f"{kind}:oversized", cases.oversized(kind, MAX_MESSAGE_BYTES + 1)),
            # as big as the server takes with its message id: with the DLQ's headers it no longer fits, so
            # its entry is the verdict without the body (which stays in its own stream)
            Case(f"{kind}:oversized_at_server_limit", cases.oversized(kind, SERVER_MAX_PAYLOAD - 64)),
        ]
    # a bit flip may leave a valid message with unknown content: not sent (its bytes are not known)
    raw = [c for c in raw if not (c.category == "raw:flipped" and cases.verdict("raw", c.payload) is None)]
    enriched = [
        c
        for c in enriched
        if not (c.category == "enriched:flipped" and cases.verdict("enriched", c.payload) is None)
    ]
    rnd = random.Random(SEED)
    rnd.shuffle(raw)
    rnd.shuffle(enriched)
    return raw, enriched


def expected_dlq(raw: list[Case], enriched: list[Case]) -> dict[str, tuple[str, str]]:
    """Message id -> (stage, reason) of every case that must end in the DLQ."""
    out: dict[str, tuple[str, str]] = {}
    for kind, stage, group in (("raw", "enricher", raw), ("enriched", "writer", enriched)):
        for i, case in enumerate(group):
            reason = cases.verdict(kind, case.payload)
            if case.category == "enriched:clickhouse_rejects":
                assert reason is None, f"seed {SEED}: the decoder should accept {case}"
                reason = "invalid_batch"
            if reason is not None:
                out[f"fuzz/{kind}/{i}"] = (stage, reason)
            else:
                assert case.category.endswith(("good", "good_big")), f"seed {SEED}: {case} is valid"
    return out


async def publish_all(broker: Broker, kind: str, group: list[Case]) -> None:
    # RAW on its node's subject: a report on another node's subject is refused (node_mismatch)
    subject = broker.raw_subject(cases.OBSERVER) if kind == "raw" else broker.enriched_subject("fuzz")
    for start in range(0, len(group), 200):
        await asyncio.gather(
            *(
                broker.publish(subject, case.payload, msg_id=f"fuzz/{kind}/{start + j}", timeout=30.0)
                for j, case in enumerate(group[start : start + 200])
            )
        )


async def drained(broker: Broker) -> bool:
    for consumer in ("enricher", "writer"):
        info = await broker.consumer_info(consumer)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def pipeline_state(broker: Broker) -> str:
    """What is still pending, and how full each stream is (a full DLQ holds its poison: never drained)."""
    consumers = [
        f"{c}: {i.num_pending} pending, {i.num_ack_pending} unacked, {i.num_redelivered} redelivered"
        for c in ("enricher", "writer")
        for i in [await broker.consumer_info(c)]
    ]
    streams = [
        f"{k}: {i.messages} messages, {i.bytes} of {i.max_bytes} bytes"
        for k in ("raw", "enriched", "dlq")
        for i in [await broker.stream_info(k)]
    ]
    return "; ".join(consumers + streams)


async def dlq_entries(
    broker: Broker, count: int, originals: dict[str, bytes]
) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """(message id -> (stage, reason), message id -> original size of each entry stored without its body);
    every other entry's body is checked to be the original message (``originals``)."""
    source = await broker.ephemeral("dlq")
    got: dict[str, tuple[str, str]] = {}
    omitted: dict[str, int] = {}
    try:
        async with asyncio.timeout(120):
            while len(got) < count:
                for d in await source.fetch(500, 1.0):
                    msg_id = d.headers.get(H_ORIGINAL_MSG_ID, "")
                    got[msg_id] = (d.headers[H_STAGE], d.headers[H_REASON])
                    if H_OMITTED_BYTES in d.headers:
                        assert d.data == b"", msg_id
                        omitted[msg_id] = int(d.headers[H_OMITTED_BYTES])
                    else:
                        assert d.data == originals.get(msg_id), (
                            f"seed {SEED}: {msg_id}: not the original's body"
                        )
                    await d.ack()
    finally:
        await source.close()
    return got, omitted


def stored(clickhouse: ClickHouseSettings) -> dict[str, tuple[int, int]]:
    query = (
        "SELECT observerNode, count() AS n, sum(bytes) AS b FROM network_flows_0_exact GROUP BY observerNode"
    )
    done = subprocess.run(
        [*KUBENETMON, "sql", "--clickhouse-dsn", clickhouse.dsn, "--format", "json", query],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {r["observerNode"]: (int(r["n"]), int(r["b"])) for r in json.loads(done.stdout)}


def ready_and_whole(role: Role) -> bool:
    return role.get("/readyz")[0] == 200


@pytest.mark.timeout(600)
async def test_bad_input_goes_to_the_dlq_and_good_input_is_stored(
    broker_for_fuzz: Broker,
    fuzz_nats: NatsSettings,
    chdb_settings: ClickHouseSettings,
    inventory: Path,
    start_role: object,
) -> None:
    broker = broker_for_fuzz
    writer = start_role("writer", *writer_args(fuzz_nats, chdb_settings))  # type: ignore[operator]
    enricher = start_role("enricher", *enricher_args(fuzz_nats, inventory))  # type: ignore[operator]
    raw, enriched = await asyncio.to_thread(generate)
    expected = expected_dlq(raw, enriched)
    category = {
        f"fuzz/{kind}/{i}": c.category
        for kind, group in (("raw", raw), ("enriched", enriched))
        for i, c in enumerate(group)
    }
    bad = len(expected)
    assert bad >= 10_000, f"seed {SEED}: only {bad} bad cases"
    for role in (writer, enricher):
        await eventually(lambda role=role: ready_and_whole(role), within=120)
    pids = {role.name: role.pids() for role in (writer, enricher)}
    assert all(len(p) >= 2 for p in pids.values()), pids  # a supervisor and its worker

    await asyncio.gather(publish_all(broker, "raw", raw), publish_all(broker, "enriched", enriched))
    try:
        await eventually(lambda: drained(broker), within=SETTLE_S)
    except AssertionError:
        state = await pipeline_state(broker)
        raise AssertionError(f"seed {SEED}: not drained within {SETTLE_S:g}s: {state}") from None

    originals = {
        f"fuzz/{kind}/{i}": c.payload
        for kind, group in (("raw", raw), ("enriched", enriched))
        for i, c in enumerate(group)
    }
    got, omitted = await dlq_entries(broker, bad, originals)
    assert (await broker.stream_info("dlq")).messages == bad, f"seed {SEED}"
    if got != expected:
        wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        extra = {k: v for k, v in got.items() if k not in expected}
        categories = Counter(category[k] for k in wrong)
        raise AssertionError(
            f"seed {SEED}: {len(wrong)} wrong, {len(extra)} extra DLQ entries "
            f"({categories}): {list(wrong.items())[:10]} {list(extra.items())[:5]}"
        )
    by_reason = Counter(got.values())
    assert by_reason == Counter(expected.values())
    # only what cannot fit with the DLQ's headers is recorded without its body (the verdict, and its size)
    assert omitted == {k: len(originals[k]) for k in category if category[k].endswith("at_server_limit")}

    good_raw = [c for c in raw if c.category.startswith("raw:good")]
    good_enriched = [c for c in enriched if c.category == "enriched:good"]
    want = {
        cases.OBSERVER: (2 * sum(c.records for c in good_raw), sum(c.bytes for c in good_raw)),
        cases.DIRECT_NODE: (sum(c.records for c in good_enriched), sum(c.bytes for c in good_enriched)),
    }
    assert stored(chdb_settings) == want, f"seed {SEED}"

    for role in (writer, enricher):
        assert role.pids() == pids[role.name], f"{role.name}: a process died or was replaced"
        assert role.metric("kubenetmon_pool_restarts_total") == 0
        assert ready_and_whole(role)
        role.proc.signal(signal.SIGTERM)
    for role in (enricher, writer):
        assert await role.proc.wait(within=60) == 0, role.proc.log[-3000:]
    print(
        f"fuzz seed {SEED}: {bad} bad messages in the DLQ by reason {dict(by_reason)}; "
        f"{len(good_raw)} RAW and {len(good_enriched)} ENRICHED good messages stored exactly"
    )
