"""The agent's link statistics in its ledger (scripted kernel, interfaces and broker): growth per span,
unmeasured spans (no external interface, a failed read, a reboot), a crash that keeps the baseline."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.agent.checkpoint import StateDir
from kubenetmon.agent.links import Layout
from kubenetmon.agent.service import Agent
from kubenetmon.agent.settings import AgentSettings
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import decode_raw
from tests.support.agent_fakes import Broker, Clock, Kernel, run_minutes


class Interfaces:
    """eth0 (index 2) whose counter the test moves; ``fail`` makes the next reads fail."""

    def __init__(self, *, external: bool = True) -> None:
        self.counter = 10_000
        self.fail = False
        self.layout_value = Layout(names={1: "lo", 2: "eth0"}) if external else Layout(names={1: "lo"})

    def bytes_of(self, indexes: list[int]) -> dict[int, int]:
        if self.fail:
            raise OSError(5, "EIO")
        return {2: self.counter} if 2 in indexes else {}

    def layout(self) -> Layout:
        return self.layout_value


def make(tmp_path: Path, kernel: Kernel, clock: Clock, links: Interfaces, *, boot: str = "boot-a") -> Agent:
    settings = AgentSettings(
        node_name="n1",
        interval_s=60,
        poll_interval_s=5,
        state_dir=str(tmp_path),
        external_interfaces=("eth*",),
    )
    agent = Agent(
        settings,
        conntrack=kernel,  # type: ignore[arg-type]
        state_dir=StateDir(tmp_path),
        publisher=Broker(),  # type: ignore[arg-type]
        boot=boot,
        clock=clock,
        links=links,  # type: ignore[arg-type]
    )
    agent.resume()
    agent.tick()  # the first poll: the interfaces' baseline
    return agent


def ledgers(agent: Agent) -> list[Ledger]:
    found = [decode_raw(r.chunks[0]).ledger for r in agent.pending]
    assert all(found)
    return found  # type: ignore[return-value]


def grow(links: Interfaces, agent: Agent, kernel: Kernel, clock: Clock, amount: int) -> None:
    links.counter += amount
    run_minutes(agent, kernel, clock, 1)


def test_each_span_carries_the_interfaces_growth_in_it(tmp_path: Path) -> None:
    kernel, clock, links = Kernel(), Clock(), Interfaces()
    agent = make(tmp_path, kernel, clock, links)
    for amount in (5000, 0, 123_456):
        grow(links, agent, kernel, clock, amount)
    assert [g.link_bytes for g in ledgers(agent)] == [5000, 0, 123_456]
    # the scripted kernel's flows have no address inside the node: all of their bytes cross it
    assert all(g.boundary_bytes == g.bytes for g in ledgers(agent))


def test_no_external_interface_or_a_failed_read_leaves_the_span_unmeasured(tmp_path: Path) -> None:
    kernel, clock = Kernel(), Clock()
    agent = make(tmp_path / "a", kernel, clock, Interfaces(external=False))
    run_minutes(agent, kernel, clock, 1)
    assert [(g.link_bytes, g.boundary_bytes) for g in ledgers(agent)] == [(-1, 0)]
    links = Interfaces()
    agent = make(tmp_path / "b", kernel, clock, links)
    grow(links, agent, kernel, clock, 100)
    links.fail = True
    grow(links, agent, kernel, clock, 100)
    links.fail = False
    grow(links, agent, kernel, clock, 100)  # the baseline is read again at its first poll
    grow(links, agent, kernel, clock, 300)
    assert [g.link_bytes for g in ledgers(agent)] == [100, -1, -1, 300]


def test_a_crash_keeps_the_baseline_and_a_reboot_does_not(tmp_path: Path) -> None:
    kernel, clock, links = Kernel(), Clock(), Interfaces()
    agent = make(tmp_path, kernel, clock, links)
    grow(links, agent, kernel, clock, 100)
    links.counter += 7000  # while the agent is down
    clock.now += 30
    agent = make(tmp_path, kernel, clock, links)  # same boot: the saved baseline covers the outage
    grow(links, agent, kernel, clock, 50)
    assert [g.link_bytes for g in ledgers(agent)][-1] == 7050
    agent = make(tmp_path, kernel, clock, links, boot="boot-b")  # a reboot: counters restarted
    grow(links, agent, kernel, clock, 50)
    assert ledgers(agent)[-1].link_bytes == -1
