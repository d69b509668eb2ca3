"""The whole pipeline as separate processes around a lab: nats-server, one agent per node, enricher, writer.

The broker is one nats-server (streams R1) or, with ``Options(broker="cluster")``, a three-node JetStream
cluster (streams R3, every role given all three URLs; ``nats`` is then a ``NatsCluster`` with its
leader-kill, pause and rolling-restart faults).

``Pipeline`` starts the real commands with short intervals and offers what the exactness and fault tests
need: ``stop_agents()`` (SIGTERM: each publishes its partial interval), ``kill``/``restart`` of a role or
of one pool worker, ``stop_nats``/``start_nats`` (store kept; every member of a cluster),
``block_clickhouse`` (see ``chaos``), ``duplicate_deliveries`` (see ``chaos``), ``settled()`` and
``wait_until_stored()`` (the pipeline idle, then the stored totals read through ``kubenetmon sql``; the
node table's with ``expected_nodes()``/``stored_nodes()``), and
``teardown()``, which leaves no process.

Reads go through ``kubenetmon sql`` only: this process never opens the chDB directory (chDB allows one
process per directory; the writer owns it, and ``sql`` asks the writer's endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubenetmon.cli.natsserver import free_port
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.errors import TransientError
from kubenetmon.shared.settings import NatsSettings
from tests.e2e import chaos
from tests.e2e.cluster import CLOUD, Cluster
from tests.e2e.expect import (
    NODE_QUERY,
    STORED_QUERY,
    NodeTotals,
    Totals,
    expected,
    expected_nodes,
    stored,
    stored_nodes,
)
from tests.fixtures.lab_kernel import CtEntry, DestroyWatch
from tests.support import http
from tests.support.commands import KUBENETMON, flags
from tests.support.roles import Role
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from kubenetmon.cli.natsserver import NatsServer
    from tests.fixtures.nats_cluster import NatsCluster


@dataclass(frozen=True)
class Options:
    interval_s: int = 2
    poll_s: float = 0.5
    enricher_workers: int = 2
    ack_wait_s: float = 3.0
    duplicate_window_s: float = 120.0
    writer_batch_age_s: float = 0.3
    agent_args: tuple[str, ...] = ()
    broker: str = "single"
    """``single``: one nats-server, streams R1; ``cluster``: three clustered servers, streams R3."""
    nats: tuple[tuple[str, Any], ...] = ()
    """``NatsSettings`` fields to change for every role and ``nats init`` (e.g. a small ``raw_max_bytes``)."""


def _probe(port: int, path: str) -> int:
    try:
        return http.get(port, path, timeout=2)[0]
    except OSError:
        return 0


class Pipeline:
    """The roles' command lines for one cluster and broker; started by ``start()``."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        workdir: Path,
        nats: NatsServer | NatsCluster,
        settings: NatsSettings,
        options: Options,
    ) -> None:
        self.cluster, self.workdir, self.nats, self.options = cluster, workdir, nats, options
        self.settings = dataclasses.replace(
            settings,
            ack_wait_s=options.ack_wait_s,
            duplicate_window_s=options.duplicate_window_s,
            max_deliver=10,
            backoff_s=(0.2, 0.5, 1.0, 2.0),
            **dict(options.nats),
        )
        self.clickhouse_dir = workdir / "clickhouse"
        self.ports: dict[str, int] = {}
        self.roles: dict[str, Role] = {}
        self.watches: dict[str, DestroyWatch] = {}
        inventory = cluster.write_inventory(workdir / "inventory.json")
        custom = cluster.write_ranges(workdir / "ranges.json")
        for name in cluster.nodes:
            self._add(f"agent:{name}", self._agent_argv(name))
        self._add("enricher", self._enricher_argv(inventory, custom))
        self._add("writer", self._writer_argv())

    # -- command lines --------------------------------------------------------------------------------

    def _add(self, name: str, argv: list[str]) -> None:
        self.roles[name] = Role(name, argv, log_path=self.workdir / f"{name.replace(':', '-')}.log")

    def _port(self, role: str) -> int:
        self.ports[role] = free_port()
        return self.ports[role]

    def _common(self) -> list[str]:
        return [*flags(self.settings), "--log-format", "text"]

    def _agent_argv(self, node: str) -> list[str]:
        o = self.options
        return [
            *KUBENETMON, "agent", "--node-name", node, "--netns", self.cluster.nodes[node].netns,
            "--interval", str(o.interval_s), "--poll-interval", str(o.poll_s),
            "--state-dir", str(self.workdir / f"agent-{node}"),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(self._port(f"agent:{node}")),
            "--drain-timeout", "15s", *o.agent_args, *self._common(),
        ]  # fmt: skip

    def _enricher_argv(self, inventory: Path, custom: Path) -> list[str]:
        return [
            *KUBENETMON, "enricher", "--inventory", str(inventory), "--custom-ranges", str(custom),
            "--cloud", CLOUD[0], "--region", CLOUD[1], "--cluster", "e2e", "--environment", "test",
            "--workers", str(self.options.enricher_workers), "--respawn-backoff", "0.2s",
            "--fetch-timeout", "2s", "--http-host", "127.0.0.1", "--http-port", str(self._port("enricher")),
            "--drain-timeout", "15s", "--interval", str(self.options.interval_s), *self._common(),
        ]  # fmt: skip

    def _writer_argv(self) -> list[str]:
        return [
            *KUBENETMON, "writer", "--clickhouse-dsn", f"chdb://{self.clickhouse_dir}",
            "--batch-age", f"{self.options.writer_batch_age_s}s", "--retry-min", "0.2s", "--retry-max", "1s",
            "--respawn-backoff", "0.2s", "--http-host", "127.0.0.1", "--http-port", str(self._port("writer")),
            "--drain-timeout", "20s", *self._common(),
        ]  # fmt: skip

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> Pipeline:
        """Watch DESTROY events (ground truth), create the topology, start every role, wait until ready."""
        self.watches = {name: node.destroy_watch() for name, node in self.cluster.nodes.items()}
        init = subprocess.run(
            [*KUBENETMON, "nats", "init", *flags(self.settings)], capture_output=True, text=True, timeout=120
        )
        assert init.returncode == 0, init.stderr
        for role in self.roles.values():
            role.start()
        self.wait_ready()
        return self

    def wait_ready(self, *roles: str, timeout: float = 90) -> None:
        """Wait until every role (or those named) answers ``/readyz`` with 200."""
        names = roles or tuple(self.roles)

        def ready() -> bool:
            for name in names:
                self.roles[name].check_alive()
            return all(_probe(self.ports[name], "/readyz") == 200 for name in names)

        wait_until(ready, timeout=timeout, what=f"{', '.join(names)} ready", step=0.1)

    def agents(self) -> list[str]:
        return [name for name in self.roles if name.startswith("agent:")]

    def stop_agents(self) -> None:
        """SIGTERM every agent: each cuts and publishes its partial interval and exits 0."""
        for name in self.agents():
            self.roles[name].terminate()
        for name in self.agents():
            code = self.roles[name].stop()
            assert code == 0, f"{name} exited {code}:\n{self.roles[name].tail()}"

    def kill(self, role: str) -> None:
        """SIGKILL a role with all its processes."""
        self.roles[role].kill()

    def restart(self, role: str, *, wait: bool = True) -> None:
        self.roles[role].restart()
        if wait:
            self.wait_ready(role)

    def kill_worker(self, role: str, *, index: int = 0) -> int:
        """SIGKILL one pool worker of ``role``; wait until the pool respawned it. Returns the victim."""
        pool = self.roles[role]
        workers = pool.wait_workers(self._workers(role))
        victim = workers[index % len(workers)]
        os.kill(victim, signal.SIGKILL)
        pool.wait_workers(self._workers(role), exclude=(victim,))
        self.wait_ready(role)
        return victim

    def _workers(self, role: str) -> int:
        return self.options.enricher_workers if role == "enricher" else 1

    def stop_nats(self, *, kill: bool = False) -> None:
        self.nats.kill() if kill else self.nats.stop()

    def start_nats(self) -> None:
        self.nats.start()

    def teardown(self) -> None:
        for role in self.roles.values():
            role.teardown()

    def logs(self) -> str:
        roles = "\n".join(f"----- {name}\n{role.tail(40)}" for name, role in self.roles.items())
        return f"{roles}\n----- nats\n{self.nats.log_tail(20)}"

    # -- faults ---------------------------------------------------------------------------------------

    def block_clickhouse(self, seconds: float, *, how: str = "immutable") -> str:
        """ClickHouse refuses the running writer for ``seconds`` (see ``chaos``); returns how."""
        return chaos.block_clickhouse(self, seconds, how=how)

    def duplicate_deliveries(self, *, raw: int = 8, enriched: int = 8) -> dict[str, int]:
        """Deliver messages twice, three ways (see ``chaos``); returns how many of each."""
        stalled = chaos.stall_enricher_worker(self)
        return {"redelivered": stalled, **chaos.republish(self, raw=raw, enriched=enriched)}

    # -- ground truth ---------------------------------------------------------------------------------

    def kernel(self) -> dict[str, list[CtEntry]]:
        """Each node's entries: the table now, and the final counters of entries destroyed meanwhile.

        Every DESTROY is one conntrack's end, so each counts, even when a later conntrack reused the same
        tuples and id (short flows do). A table entry is left out only when a DESTROY with its id and
        tuple arrived once the table was being read: that is the same conntrack, and its final counters
        are in the event. One destroyed before the read began is another conntrack than the table's."""
        out = {}
        for name, node in self.cluster.nodes.items():
            watch = self.watches[name]
            before = len(watch.snapshot())
            table = node.conntrack_table()
            destroyed = watch.snapshot()
            ended = {(e.id, e.orig) for e in destroyed[before:]}
            out[name] = [e for e in table if (e.id, e.orig) not in ended] + destroyed
        return out

    def expected(self) -> Totals:
        return expected(self.cluster, self.kernel())

    def expected_nodes(self) -> NodeTotals:
        """What the node table must hold: the nodes' own flows (``expect.expected_nodes``)."""
        return expected_nodes(self.cluster, self.kernel())

    def wait_quiet(self, *, timeout: float = 30) -> None:
        """Wait until the kernel's counters stop moving (late ACKs of finished exchanges are in)."""
        last: list[object] = [None]

        def quiet() -> bool:
            now = {name: set(entries) for name, entries in self.kernel().items()}
            same, last[0] = now == last[0], now
            return same

        wait_until(quiet, timeout=timeout, what="the lab's traffic to be quiet", step=0.3)

    # -- reading --------------------------------------------------------------------------------------

    def sql(self, query: str) -> list[dict[str, Any]]:
        dsn = f"chdb://{self.clickhouse_dir}"
        done = subprocess.run(
            [*KUBENETMON, "sql", "--clickhouse-dsn", dsn, "--format", "json", query],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubenetmon sql failed ({done.returncode}): {done.stderr}")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def stored(self) -> Totals:
        return stored(self.sql(STORED_QUERY))

    def stored_nodes(self) -> NodeTotals:
        return stored_nodes(self.sql(NODE_QUERY), self.cluster)

    def metrics(self, role: str) -> dict[str, float]:
        """A role's /metrics samples, summed over their labels, by name ({} if it does not answer)."""
        try:
            status, text = http.get(self.ports[role], "/metrics", timeout=5)
        except OSError:
            return {}
        return http.by_name(text) if status == 200 else {}

    def broker_call(self, work: Any) -> Any:
        """Run ``await work(broker)`` on a fresh connection (the tests are synchronous)."""

        async def run() -> Any:
            async with await Broker.connect(self.settings, name="e2e-test", wait_s=10.0) as broker:
                return await work(broker)

        return asyncio.run(run())

    def backlog(self) -> dict[str, int]:
        """Messages not yet settled by each consumer, and the DLQ's size."""

        async def read(broker: Broker) -> dict[str, int]:
            out = {}
            for consumer in ("enricher", "writer"):
                info = await broker.consumer_info(consumer)
                out[consumer] = info.num_pending + info.num_ack_pending
            out["dlq"] = (await broker.stream_info("dlq")).messages
            return out

        result: dict[str, int] = self.broker_call(read)
        return result

    def wait_settled(self, *, timeout: float = 120) -> None:
        """Wait until both consumers have settled everything (agents stopped: nothing new arrives)."""

        def settled() -> bool:
            for name in ("enricher", "writer"):
                self.roles[name].check_alive()
            try:
                backlog = self.backlog()
            except TransientError:  # a cluster still electing after a fault: ask again
                return False
            return backlog["enricher"] == 0 and backlog["writer"] == 0

        wait_until(settled, timeout=timeout, what="the pipeline to settle", step=0.3)

    def wait_until_stored(self, expected: Totals, *, timeout: float = 120) -> Totals:
        """The stored totals as soon as they equal ``expected``, else once the pipeline has settled
        (then they are final: a difference is a real one), else at the deadline."""
        got = self.stored()
        if got != expected:
            with contextlib.suppress(TimeoutError):
                self.wait_settled(timeout=timeout)
            got = self.stored()
        return got
