"""The insert loop without ClickHouse: bisection to the refused message, retries, the deadline when stopping.

The writer's and ``replay enriched``'s own outcomes (ack, DLQ, hand back; counts) are tested against
chDB in ``test_worker.py`` and ``test_replay.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from kubenetmon.writer.batcher import Batch, Part
from kubenetmon.writer.insert import insert_all, retry_delay
from kubenetmon.writer.settings import WriterSettings
from kubenetmon.writer.sink import InvalidBatch, SinkUnavailable
from tests.support.messages import messages

FAST = WriterSettings(retry_min_s=0.001, retry_max_s=0.004)


class Recorder:
    """Outcomes that record; ``insert`` refuses batches holding a ``bad`` owner and fails while
    ``down`` (a count of attempts, or -1: always). Each insert advances the clock by one second."""

    def __init__(self, *, bad: frozenset[int] = frozenset(), down: int = 0) -> None:
        self.bad, self.down = bad, down
        self.now = 0.0
        self.attempts: list[list[int]] = []
        self.wrote: list[list[int]] = []
        self.rejected: list[int] = []
        self.given_up: list[list[int]] = []
        self.retries: Counter[str] = Counter()

    def clock(self) -> float:
        return self.now

    async def insert(self, batch: Batch[int]) -> None:
        self.now += 1.0
        self.attempts.append(batch.owners)
        if self.down:
            self.down -= 1
            raise SinkUnavailable("connection refused")
        if self.bad & set(batch.owners):
            raise InvalidBatch("Unknown element 'sideways' for enum")

    async def written(self, batch: Batch[int]) -> None:
        self.wrote.append(batch.owners)

    async def refused(self, part: Part[int], exc: InvalidBatch) -> None:
        self.rejected.append(part.owner)

    async def unwritten(self, batches: list[Batch[int]], exc: SinkUnavailable) -> None:
        self.given_up += [b.owners for b in batches]

    def retrying(self, reason: str) -> None:
        self.retries[reason] += 1


def _batch(count: int) -> Batch[int]:
    batch: Batch[int] = Batch(opened_at=0.0)
    for i, msg in enumerate(messages(count, 2)):
        batch.add(msg, i)
    return batch


async def _run(
    recorder: Recorder, batch: Batch[int], *, stop: asyncio.Event | None = None, drain_s: float = 10.0
) -> bool:
    return await insert_all(
        batch,
        outcomes=recorder,
        settings=FAST,
        stop=stop or asyncio.Event(),
        drain_s=drain_s,
        clock=recorder.clock,
    )


async def test_a_refused_batch_is_bisected_down_to_the_bad_messages_in_order() -> None:
    recorder = Recorder(bad=frozenset({2, 5}))
    assert await _run(recorder, _batch(8))
    assert recorder.rejected == [2, 5]
    assert [o for part in recorder.wrote for o in part] == [0, 1, 3, 4, 6, 7]
    assert recorder.retries == Counter(split=5) and recorder.given_up == []


async def test_unavailable_is_retried_until_back_and_nothing_is_given_up() -> None:
    recorder = Recorder(down=3)
    assert await _run(recorder, _batch(3))
    assert recorder.attempts == [[0, 1, 2]] * 4
    assert recorder.wrote == [[0, 1, 2]] and recorder.retries == Counter(unavailable=3)


async def test_stopping_retries_until_the_drain_deadline_then_gives_the_rest_up() -> None:
    stop = asyncio.Event()
    stop.set()
    recorder = Recorder(down=-1)
    assert not await _run(recorder, _batch(3), stop=stop, drain_s=2.5)
    assert len(recorder.attempts) == 4  # deadline at 1 + 2.5 s; the 4th failure, at 4 s, is past it
    assert recorder.given_up == [[0, 1, 2]] and recorder.wrote == []


async def test_without_a_drain_the_first_failure_when_stopping_gives_up_only_what_is_unwritten() -> None:
    stop = asyncio.Event()
    stop.set()
    recorder = Recorder(bad=frozenset({3}))
    original = recorder.insert

    async def insert(batch: Batch[int]) -> None:
        if batch.owners == [2, 3]:
            recorder.down = 1
        await original(batch)

    recorder.insert = insert  # type: ignore[method-assign]
    assert not await _run(recorder, _batch(4), stop=stop, drain_s=0.0)
    assert recorder.wrote == [[0, 1]] and recorder.given_up == [[2, 3]] and recorder.rejected == []


def test_the_retry_delay_doubles_up_to_the_maximum() -> None:
    settings = WriterSettings(retry_min_s=0.5, retry_max_s=3.0)
    assert [retry_delay(settings, failures=n) for n in (1, 2, 3, 4, 100)] == [0.5, 1.0, 2.0, 3.0, 3.0]
