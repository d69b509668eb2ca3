"""Fakes of the agent's own boundaries for its state-machine tests: a scripted conntrack table
(``Kernel``), a publisher that keeps what it accepts (``Broker``), a test clock, and an ``Agent`` wired to
them (``make``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubenetmon.agent import ctnetlink as ct
from kubenetmon.agent import ctstats
from kubenetmon.agent.checkpoint import StateDir
from kubenetmon.agent.conntrack import DumpResult
from kubenetmon.agent.publisher import Oversized, Sent
from kubenetmon.agent.reports import Report
from kubenetmon.agent.service import Agent
from kubenetmon.agent.settings import AgentSettings
from kubenetmon.shared.errors import TransientError
from tests.support.ctmsg import Entry


class Kernel:
    """A conntrack table whose flows grow by a fixed amount per poll."""

    def __init__(self, flows: int = 3) -> None:
        self.counters = {Entry(sport=1000 + i, ident=i).key(): [0, 0, 0, 0] for i in range(flows)}
        self.overruns = 0
        self.dying_skipped = 0
        self.resync_needed = False
        self.drops = 0
        """conntrack's cumulative table drops (``stats``)."""
        self.max_entries = 1000
        self.stamps: bool | None = True
        """What ``timestamps()`` says (``nf_conntrack_timestamp``)."""

    def timestamps(self) -> bool | None:
        return self.stamps

    def stats(self) -> ctstats.Stats:
        return ctstats.Stats(drop=self.drops, entries=len(self.counters), max_entries=self.max_entries)

    def grow(self, amount: int = 100) -> None:
        for c in self.counters.values():
            c[0], c[1], c[2], c[3] = c[0] + 1, c[1] + amount, c[2] + 1, c[3] + amount * 2

    def dump(self, consume: object) -> DumpResult:
        consume(list(self.counters), [ct.counters_blob(*c) for c in self.counters.values()])  # type: ignore[operator]
        return DumpResult(len(self.counters), True, 0.0)

    def read_events(self, sink: object) -> int:
        return 0

    def event_fd(self) -> int:
        return -1


class Broker:
    """Accepts reports (keeping them) or refuses them all while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.store_full = False
        self.oversized: list[int] = []
        self.got: dict[str, bytes] = {}
        self.offers: list[tuple[int, bool]] = []
        """(seq, fresh) of every send: fresh only on a report's first offer since it was cut."""

    async def send(self, report: Report, *, fresh: bool = False) -> Sent:
        self.offers.append((report.seq, fresh))
        if self.down:
            raise TransientError("broker down")
        if self.oversized:
            bad, self.oversized = self.oversized, []
            for i, chunk in enumerate(report.chunks):
                if i not in bad:
                    self.got[report.msg_id(i)] = chunk
            raise Oversized(bad)
        for i, chunk in enumerate(report.chunks):
            self.got[report.msg_id(i)] = chunk
        return Sent(len(report.chunks), 0, report.size)

    async def close(self) -> None:
        pass

    def total(self) -> int:
        from kubenetmon.shared.schema import decode_raw

        return sum(r.orig_bytes for c in self.got.values() for r in decode_raw(c).rows)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path, kernel: Kernel, broker: Broker, clock: Clock, *, boot: str = "boot-a", **kw: object
) -> Agent:
    settings = AgentSettings(node_name="n1", interval_s=60, poll_interval_s=5, state_dir=str(tmp_path), **kw)  # type: ignore[arg-type]
    agent = Agent(
        settings,
        conntrack=kernel,  # type: ignore[arg-type]
        state_dir=StateDir(tmp_path),
        publisher=broker,  # type: ignore[arg-type]
        boot=boot,
        clock=clock,
    )
    agent.resume()
    return agent


def run_minutes(agent: Agent, kernel: Kernel, clock: Clock, minutes: int) -> None:
    for _ in range(minutes * 12):
        kernel.grow()
        clock.now += 5
        agent.tick()


def publish_all(agent: Agent) -> None:
    while agent.pending:
        assert asyncio.run(agent.backlog.send_head())
