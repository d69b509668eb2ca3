"""An agent in the test's own process on a lab node (real conntrack and interface counters), its clock in
the test's hands and its reports kept in memory: the RAW a node would publish, without a broker."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.agent.checkpoint import StateDir
from kubenetmon.agent.conntrack import Conntrack
from kubenetmon.agent.links import Links
from kubenetmon.agent.owners import Sockets
from kubenetmon.agent.service import Agent
from kubenetmon.agent.settings import AgentSettings
from kubenetmon.shared.ledger import Ledger
from kubenetmon.shared.schema import RawMessage, decode_raw
from tests.fixtures.lab import Node
from tests.support.agent_fakes import Broker, Clock


class Probe:
    """An agent in this process on a lab node, its clock in the test's hands."""

    def __init__(self, node: Node, tmp_path: Path, *, owners: bool = False) -> None:
        self.clock = Clock(1_800_000_000.0)
        settings = AgentSettings(
            node_name=node.name,
            netns=node.netns,
            interval_s=60,
            poll_interval_s=5,
            state_dir=str(tmp_path),
            external_interfaces=("fab0",),
        )
        self.links = Links(netns=node.netns)
        self.conntrack = Conntrack(netns=node.netns)
        self.sockets = Sockets(netns=node.netns) if owners else None
        self.agent = Agent(
            settings,
            conntrack=self.conntrack,
            state_dir=StateDir(tmp_path),
            publisher=Broker(),  # type: ignore[arg-type]
            boot="boot-lab",
            clock=self.clock,
            links=self.links,
            sockets=self.sockets,
        )
        self.agent.resume()
        self.agent.tick()  # the first poll: baselines of flows and interface counters

    def cut(self) -> Ledger:
        """Poll, then poll past the interval's end: the report's ledger."""
        self.clock.now += 5
        self.agent.tick()
        self.clock.now += 60
        self.agent.tick()
        ledger = decode_raw(self.agent.pending[-1].chunks[0]).ledger
        assert ledger is not None
        return ledger

    def close(self) -> None:
        self.conntrack.close()
        self.links.close()
        if self.sockets is not None:
            self.sockets.close()

    def messages(self) -> list[RawMessage]:
        """Every chunk of every report cut so far, decoded."""
        return [decode_raw(chunk) for report in self.agent.pending for chunk in report.chunks]
