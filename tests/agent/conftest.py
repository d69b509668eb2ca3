"""The agent tests' fixtures: ``start_agent`` runs ``kubenetmon agent`` processes, killed at the end."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.lab import Node
from tests.support.agent import AgentProcess


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(node: Node, nats: NatsSettings, **kw: object) -> AgentProcess:
        kw.setdefault("state_dir", tmp_path / f"state-{node.name}")
        agent = AgentProcess(node, nats, log=tmp_path / f"agent-{node.name}.log", **kw)  # type: ignore[arg-type]
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.kill()
    if os.environ.get("KUBENETMON_TEST_SHOW_AGENT_LOGS"):
        for agent in agents:
            print(agent.output())
