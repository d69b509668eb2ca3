"""The whole pipeline on one machine, as separate processes, started and stopped in the right order.

Start: nats-server (loopback, store in the data directory), the JetStream topology, the writer (it owns
the chDB directory, migrates it and serves read-only queries to ``top``/``sql``), the demo lab if asked,
the enricher, one agent per metered namespace, and the live view (``kubenetmon top --watch``).

Stop (Ctrl-C, SIGTERM, or any role exiting on its own): the view; the agents, which publish their partial
interval; the lab; then the enricher once its consumer has nothing pending, the writer once its consumer
has nothing pending (SIGTERM makes it flush its open batch), and NATS last. So every byte an agent saw is
in ClickHouse when ``up`` exits, or, if a deadline passed, still in the broker and written on the next run.

This module starts processes and reads consumer counters; it never imports a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, TextIO

from kubenetmon.cli.natsserver import NatsServer
from kubenetmon.cli.up import argv
from kubenetmon.cli.up.children import Child, die_with_parent
from kubenetmon.cli.up.settings import UpSettings
from kubenetmon.shared import exits, localrun
from kubenetmon.shared.broker import Broker, connect_ready
from kubenetmon.shared.errors import ConfigError, KubenetmonError, TransientError
from kubenetmon.shared.settings import NatsSettings

log = logging.getLogger(__name__)

AGENT_DRAIN_S: Final = 15.0
SERVICE_DRAIN_S: Final = 20.0
SETTLE_S: Final = 30.0
LAB_READY_S: Final = 60.0
READY_S: Final = 90.0
_SETTLE_POLL_S: Final = 0.2


@dataclass(frozen=True)
class AgentSpec:
    node: str
    netns: str = ""


@dataclass(frozen=True)
class Plan:
    """What a run meters and with which metadata (a demo lab fills it in once it is built)."""

    settings: UpSettings
    agents: tuple[AgentSpec, ...] = ()
    inventory: str = ""
    kubeconfig: str = ""
    lab_command: tuple[str, ...] = ()
    enricher_args: tuple[str, ...] = ()
    """Labeling settings that come with the metadata (the demo's cloud, region and ranges)."""
    description: str = ""
    """What is metered, in a few words."""
    env: Mapping[str, str] = field(default_factory=dict)
    interactive: bool = False
    """stdout is a terminal: the live view draws a table instead of logging lines."""


class Pipeline:
    def __init__(self, plan: Plan, *, say: TextIO) -> None:
        self.plan = plan
        self.settings = plan.settings
        self._say = say
        self._nats: NatsServer | None = None
        self._labelling: list[str] = []
        self._broker: Broker | None = None
        self._roles: dict[str, Child] = {}
        self.failed: list[str] = []

    def tell(self, text: str) -> None:
        print(f"kubenetmon up: {text}", file=self._say, flush=True)

    # ------------------------------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> int:
        try:
            plan = await self._start(stop)
            self._announce(plan)
            await self._wait(stop)
        except ConfigError as exc:
            self.tell(str(exc))
            self.failed.append("start")
        finally:
            await self._stop()
        return exits.FAILED if self.failed else exits.DONE

    async def _start(self, stop: asyncio.Event) -> Plan:
        s = self.settings
        last = localrun.read(s.data_dir)
        if last is not None and last.kept_nats_alive():
            raise ConfigError(
                f"the NATS server the last run kept (pid {last.nats_pid}, {last.nats_url}) still holds "
                f"{s.nats_dir}: stop it first (`kill {last.nats_pid}`)"
            )
        # --keep-nats: a session of its own, so neither Ctrl-C nor this process's exit stops it
        self._nats = NatsServer(
            s.nats_dir, port=s.nats_port, preexec_fn=os.setsid if s.keep_nats else die_with_parent()
        )
        try:
            self._nats.start()  # in this thread on purpose: the kernel ties PR_SET_PDEATHSIG to it
        except RuntimeError as exc:
            raise ConfigError(f"nats-server did not start; see {self._nats.log_path}: {exc}") from None
        nats = NatsSettings(urls=(self._nats.url,))
        try:
            self._broker = await connect_ready(nats, name="up", wait_s=10.0)
        except TransientError as exc:
            raise ConfigError(f"NATS at {self._nats.url} does not answer: {exc}") from None
        url = self._nats.url
        self._spawn("writer", argv.writer(s, nats_url=url))
        plan = await self._start_lab() if self.plan.lab_command else self.plan
        self._labelling = argv.labelling(
            s, inventory=plan.inventory, kubeconfig=plan.kubeconfig, extra=plan.enricher_args
        )
        pid = (self._nats.pid or 0) if s.keep_nats else 0
        localrun.write(s.data_dir, localrun.LocalRun(url, tuple(self._labelling), nats_pid=pid))
        self._spawn(
            "enricher",
            argv.enricher(
                s,
                nats_url=url,
                inventory=plan.inventory,
                kubeconfig=plan.kubeconfig,
                extra=plan.enricher_args,
            ),
        )
        for a in plan.agents:
            self._spawn(f"agent-{a.node}", argv.agent(s, nats_url=url, node=a.node, netns=a.netns))
        await self._consuming(stop)
        self._spawn("view", argv.view(s, interactive=plan.interactive), stdout="inherit")
        return plan

    async def _start_lab(self) -> Plan:
        lab = self._spawn("lab", list(self.plan.lab_command), stdout="pipe")
        try:
            line = await lab.read_line(timeout_s=LAB_READY_S)
        except TimeoutError:
            raise ConfigError(f"the demo lab was not ready within {LAB_READY_S:.0f}s") from None
        try:
            ready = json.loads(line)
            agents = tuple(AgentSpec(node=a["node"], netns=a["netns"]) for a in ready["agents"])
            nodes = ", ".join(a.node for a in agents)
            return replace(
                self.plan,
                agents=agents,
                inventory=str(ready["inventory"]),
                enricher_args=tuple(str(a) for a in ready.get("enricher_args", ())),
                description=f"{self.plan.description}: {ready.get('summary') or nodes}",
            )
        except (ValueError, KeyError, TypeError):
            words = lab.last_words(1) or line or "no output"
            raise ConfigError(f"the demo lab failed: {words}") from None

    async def _consuming(self, stop: asyncio.Event) -> None:
        """Wait until the enricher and the writer pull from their consumers (so the writer owns the
        database and serves queries), or until one of them exits, ``stop``, or a deadline."""
        assert self._broker is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_S
        waiting = {"enricher", "writer"}
        while waiting and loop.time() < deadline and not stop.is_set():
            for consumer in list(waiting):
                if self._roles[consumer].returncode is not None:
                    return  # ``_wait`` reports it
                with contextlib.suppress(KubenetmonError):
                    if (await self._broker.consumer_info(consumer)).num_waiting > 0:
                        waiting.discard(consumer)
            if waiting:
                await asyncio.sleep(_SETTLE_POLL_S)  # a counter at the server, no event to wait on
        if waiting:
            late = " and ".join(sorted(waiting))
            self.tell(f"{late} not consuming after {READY_S:.0f}s; see the logs in {self.settings.logs_dir}")

    def _spawn(self, role: str, command: list[str], *, stdout: str = "log") -> Child:
        child = Child(
            role, command, log_path=self.settings.logs_dir / f"{role}.log", env=self.plan.env, stdout=stdout
        )
        child.start()
        self._roles[role] = child
        return child

    def _announce(self, plan: Plan) -> None:
        s = self.settings
        assert self._nats is not None
        self.tell(f"ready: metering {plan.description}; reports every {s.interval}s")
        self.tell(f"data in {s.data_dir} (NATS on {self._nats.url}, logs in {s.logs_dir})")
        self.tell(f"labelling: {' '.join(self._labelling)} (kept in {localrun.record_path(s.data_dir)})")
        self.tell(
            f"in another terminal: kubenetmon top --data-dir {s.data_dir}  |  "
            f'kubenetmon sql --data-dir {s.data_dir} "SELECT ..."   (Ctrl-C here stops everything)'
        )

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until ``stop``, or until a role exits on its own (then say why and stop everything)."""
        waits = {asyncio.ensure_future(child.exited()): name for name, child in self._roles.items()}
        stopping = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (stopping, *waits):
                future.cancel()
        for future in done:
            if future in waits:
                self._report_exit(waits[future])

    def _report_exit(self, role: str) -> None:
        child = self._roles[role]
        self.failed.append(role)
        words = _last_message(child.last_words())
        self.tell(f"{role} stopped on its own (exit {child.returncode}): {words or 'no message'}")
        self.tell(f"its log: {child.log_path}; stopping the rest")

    # ----------------------------------------------------------------------------------------- stop

    async def _stop(self) -> None:
        roles = self._roles
        await self._halt(["view"], timeout_s=5.0)
        agents = [name for name in roles if name.startswith("agent-")]
        if agents:
            self.tell("stopping: agents (publishing their last, partial interval)")
            await self._halt(agents, timeout_s=AGENT_DRAIN_S + 10)
        await self._halt(["lab"], timeout_s=30.0)
        if "enricher" in roles:
            await self._settle("enricher", also_in_flight=True)
            self.tell("stopping: enricher")
            await self._halt(["enricher"], timeout_s=SERVICE_DRAIN_S + 10)
        if "writer" in roles:
            await self._settle("writer", also_in_flight=False)
            self.tell("stopping: writer (writing its last batch)")
            await self._halt(["writer"], timeout_s=SERVICE_DRAIN_S + 20)
        await self._check_written()
        if self._broker is not None:
            await self._broker.drain()
        if (
            self._nats is not None
            and self.settings.keep_nats
            and self._nats.pid
            and "start" not in self.failed
        ):
            self.tell(
                f"NATS keeps running on {self._nats.url} (pid {self._nats.pid}) with RAW and ENRICHED: "
                f"`kubenetmon replay raw --data-dir {self.settings.data_dir} --from -1h`; "
                f"stop it with `kill {self._nats.pid}`"
            )
        elif self._nats is not None:
            await asyncio.to_thread(self._nats.stop)
        if "writer" in roles:
            await self._final_report()

    async def _final_report(self) -> None:
        """What was stored, read from the directory now that nobody holds it, and where it is."""
        s = self.settings
        report = self._spawn("report", argv.final_report(s), stdout="inherit")
        await report.finish(timeout_s=60.0)
        self.tell(f"stopped; the data is in {s.data_dir}. Query it with:")
        self.tell(f"  kubenetmon top --data-dir {s.data_dir} [--by pod|namespace|class|zone|service]")
        self.tell(f'  kubenetmon sql --data-dir {s.data_dir} "SELECT ... FROM network_flows_0_exact"')

    async def _halt(self, names: Iterable[str], *, timeout_s: float) -> None:
        children = [self._roles[n] for n in names if n in self._roles]
        await asyncio.gather(*(c.stop(timeout_s=timeout_s) for c in children))

    async def _settle(self, consumer: str, *, also_in_flight: bool) -> None:
        """Wait (with a deadline) until ``consumer`` has nothing left to fetch (nor in flight)."""
        if self._broker is None or self._roles[consumer].returncode is not None:
            return
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        while asyncio.get_running_loop().time() < deadline:
            try:
                info = await self._broker.consumer_info(consumer)
            except KubenetmonError:
                return
            if info.num_pending == 0 and (info.num_ack_pending == 0 or not also_in_flight):
                return
            await asyncio.sleep(_SETTLE_POLL_S)  # a counter at the server, no event to wait on
        self.tell(f"{consumer} still had work after {SETTLE_S:.0f}s; the broker keeps it for the next run")

    async def _check_written(self) -> None:
        if self._broker is None:
            return
        try:
            info = await self._broker.consumer_info("writer")
        except KubenetmonError:
            return
        left = info.num_pending + info.num_ack_pending
        if left:
            self.tell(
                f"{left} messages are not written yet; they stay in the broker and the next run writes them"
            )


def _last_message(text: str) -> str:
    """The message of the last log line (JSON lines, or plain text)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(lines[-1])["msg"])
    return lines[-1]


async def run(plan: Plan, *, say: TextIO, stop: asyncio.Event) -> int:
    return await Pipeline(plan, say=say).run(stop)
