"""The agent process: poll conntrack, cut a report per interval, checkpoint; the backlog publishes.

One event loop thread does everything that touches the delta table (DESTROY events through a socket
reader, and the synchronous dump of each poll), so a dump and an event never interleave. Per tick:
events, dump, events; if the interval ended, its deltas become a report (persisted before the state that
lists it); then the state is saved. Publishing is ``backlog``'s: it sends pending reports oldest first
and forgets a report only after the broker acknowledged every chunk and the state without it is saved.

Broker down: ticks go on (deltas accumulate in reports on disk, bounded by the backlog). SIGTERM: a last
tick cuts the partial interval (it gets its own ``seq``), the backlog is published within the drain
budget, and the process exits 0; what could not be sent stays on disk for the next start.

The ledger: every poll also reads conntrack's own statistics (``ctstats``). Each report states the span
its deltas cover, from the poll its predecessor ended with to its own last poll (both in the checkpoint,
so the first report after a crash spans the outage: a catch-up), with the event-socket overruns and the
table drops of that span, and whether conntrack stamped creation times at every poll of it (also the
gauge ``kubenetmon_agent_conntrack_timestamps_enabled``). Every interval gets a report, with or without rows.

Source coverage (``links``, ``coverage``): every poll also reads the byte counters of the node's
external interfaces and adds their growth to the open span; each report carries that next to the bytes
of its rows that cross the node boundary. The interfaces and the node's routes are read again at every
cut (and at start), so a renamed or added interface is followed within one interval. A failed read
leaves the span's link bytes unmeasured (-1), never guessed.
DNS names (``--dns-names``): the watch socket is drained at the start of each poll and before each cut,
not on every readable event (that is a wake-up of the loop, and metrics, per packet), so every answer that
arrived before a report is cut is in the cache; its buffer holds a poll's answers. A report names the
addresses of its rows whose answer held at some moment of its span (``dnscache``); expired entries go
after each cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter

from kubenetmon.agent import ctstats, metrics, reports
from kubenetmon.agent.backlog import Backlog
from kubenetmon.agent.checkpoint import State, StateDir
from kubenetmon.agent.conntrack import Conntrack
from kubenetmon.agent.coverage import Boundary, LinkMeter
from kubenetmon.agent.dnswatch import DnsWatch
from kubenetmon.agent.flows import REPORTED_PROTOCOLS, WITH_SCTP, FlowTable, report
from kubenetmon.agent.links import Layout, Links
from kubenetmon.agent.owners import Sockets
from kubenetmon.agent.publisher import Publisher
from kubenetmon.agent.reports import Coverage, Report
from kubenetmon.agent.settings import AgentSettings
from kubenetmon.shared.ledger import TIMESTAMPS_UNKNOWN
from kubenetmon.shared.metrics import serve
from kubenetmon.shared.runtime import RootTasks, wait_any
from kubenetmon.shared.schema import RawRow

log = logging.getLogger(__name__)

_ORIG_SRC, _REPLY_SRC = (
    itemgetter(RawRow._fields.index("orig_src")),
    itemgetter(RawRow._fields.index("reply_src")),
)
FULL_TABLE = 0.9
"""Fill ratio of the conntrack table above which the agent warns: new connections will soon be refused."""


class Agent:
    """The node agent's state machine; ``main(stop)`` runs it until ``stop`` and a drain."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        conntrack: Conntrack,
        state_dir: StateDir,
        publisher: Publisher,
        boot: str,
        drain_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        links: Links | None = None,
        sockets: Sockets | None = None,
        dns: DnsWatch | None = None,
        id_key: str = "",
    ) -> None:
        self.settings, self.conntrack, self.state_dir, self.publisher = (
            settings,
            conntrack,
            state_dir,
            publisher,
        )
        self.boot, self.clock = boot, clock
        self.dns = dns
        self._dns_seen = (0, 0, 0)
        """The cache's conflicts and evictions and the socket's losses at the last metrics update."""
        self.id_key = id_key or reports.new_key()
        """Secret part of this process's message ids (``reports.Report.key``): never logged."""
        self.table = FlowTable(max_flows=settings.max_flows)
        self.protocols = WITH_SCTP if settings.report_sctp else REPORTED_PROTOCOLS
        self.backlog = Backlog(
            store=state_dir,
            publisher=publisher,
            max_reports=settings.max_backlog_reports,
            max_message_bytes=settings.max_message_bytes,
            seq=self._seq,
            checkpoint=self.checkpoint,
            drain_s=drain_s,
        )
        self.next_seq = 0
        self.interval_start = 0
        self.polls = 0
        self.last_poll = time.monotonic()
        self._overruns = self._dying = 0
        self._resync = asyncio.Event()
        self.span_from_ms = self.last_poll_ms = 0
        """The open span: the poll the last report ended with, and the latest poll (Unix ms; 0: none)."""
        self.events_lost = self.table_drops = 0
        """Event-socket overruns and conntrack table drops in the open span."""
        self.drops_seen = -1
        """The kernel's cumulative table drops at the last statistics read (-1: unknown)."""
        self.span_stamps: int | None = None
        """Creation timestamps in the open span: 1 on at every poll, 0 off at one, -1 unreadable; None: no
        poll yet."""
        self._stats: ctstats.Stats | None = None
        self._full = False
        self.links = links
        self.sockets = sockets
        """Finds the pod owning a node socket (``--socket-owners``); None: rows name no owner."""
        self.own_addresses: frozenset[bytes] = frozenset()
        self.link_meter = LinkMeter()
        self.link_bytes = 0 if links is not None else -1
        """Bytes on the external interfaces in the open span; -1: not measured (off, or a read failed)."""
        self.external: dict[int, str] = {}
        self.boundary: Boundary | None = None

    @property
    def pending(self) -> list[Report]:
        """Reports cut and not yet acknowledged, oldest first (the backlog's)."""
        return self.backlog.pending

    # -- start --------------------------------------------------------------------------------------

    def resume(self) -> None:
        """Load the checkpoint (or start fresh), adopt pending reports, report an overdue interval."""
        state = self.state_dir.load(node=self.settings.node_name)
        now = self.clock()
        if state is None:
            stored = self.state_dir.stored_reports()
            self.backlog.adopt(stored)
            # a fresh seq space: never reuse an id a lost state may have published (ids hold the interval too)
            self.next_seq = max([int(now * 1000), *(s + 1 for s in stored)])
            log.info("no usable state: starting fresh", extra={"pending_reports": len(self.pending)})
        else:
            self.state_dir.sweep(state.pending)
            self.backlog.adopt(state.pending)
            self.next_seq, self.interval_start = state.next_seq, state.interval_start
            self._resume_ledger(state.ledger, same_boot=state.boot == self.boot)
            if state.boot == self.boot:
                self.table.last, self.table.deltas = state.last, state.deltas
                self.table.missing = deque(state.missing)
                self.table.destroyed = deque(state.destroyed or [set()])
                if state.legacy_keys:
                    self.table.adopt_legacy_keys()
            else:  # the node rebooted: its conntrack table (and our baselines) are gone, deltas are not
                log.warning("node rebooted since the state was saved: baselines dropped")
                self.table.deltas = state.deltas
                self._cut(self.interval_start or int(now), boot=state.boot)
            log.info(
                "resumed from state",
                extra={
                    "flows": self.table.tracked,
                    "pending_reports": len(self.pending),
                    "seq": self.next_seq,
                },
            )
        if self.interval_start and now >= self.interval_start + self.settings.interval:
            self._cut(self.interval_start)
            self.interval_start = 0
        self.checkpoint()
        metrics.BACKLOG.set(len(self.pending))

    def _resume_ledger(self, saved: dict[str, int], *, same_boot: bool) -> None:
        self.span_from_ms, self.last_poll_ms = saved.get("from", 0), saved.get("to", 0)
        self.events_lost, self.table_drops = saved.get("lost", 0), saved.get("drops", 0)
        # the kernel's counters belong to this boot: drops while the agent was down are counted then
        self.drops_seen = saved.get("seen", -1) if same_boot else -1
        if self.links is not None:
            # interface counters belong to this boot, like conntrack's: after a reboot (or from a state
            # saved without them) the open span's link bytes are not known
            measured = same_boot and "link" in saved
            self.link_bytes = saved["link"] if measured else -1
            if measured:
                self.link_meter.last = {int(k[2:]): v for k, v in saved.items() if k.startswith("if")}
        self.span_stamps = saved.get("ts")

    def _ledger_state(self) -> dict[str, int]:
        state = {
            "from": self.span_from_ms,
            "to": self.last_poll_ms,
            "lost": self.events_lost,
            "drops": self.table_drops,
            "seen": self.drops_seen,
            **({"ts": self.span_stamps} if self.span_stamps is not None else {}),
        }
        if self.links is not None and self.link_bytes >= 0:
            state["link"] = self.link_bytes
            state.update((f"if{index}", value) for index, value in self.link_meter.last.items())
        return state

    # -- ticks --------------------------------------------------------------------------------------

    def poll(self) -> None:
        """DESTROY events, a full dump, events again; counts everything. A failed dump is logged."""
        started = time.monotonic()
        self.read_dns()
        before = self.conntrack.overruns
        metrics.EVENTS.inc(self.conntrack.read_events(self.table.destroy))
        self.table.begin_dump()
        try:
            result = self.conntrack.dump(self.table.observe)
        except (OSError, ValueError) as exc:  # what was seen is counted; absences prove nothing
            self.table.end_dump(consistent=False)
            metrics.POLL_FAILURES.inc()
            log.error("conntrack dump failed, retrying at the next poll: %r", exc)
            return
        except BaseException:
            self.table.end_dump(consistent=False)
            raise
        self.table.end_dump(consistent=result.consistent)
        metrics.EVENTS.inc(self.conntrack.read_events(self.table.destroy))
        metrics.EVENTS_LOST.inc(self.conntrack.overruns - self._overruns)
        self.events_lost += self.conntrack.overruns - self._overruns
        self._overruns = self.conntrack.overruns
        self.last_poll_ms = int(self.clock() * 1000)
        self.span_from_ms = self.span_from_ms or self.last_poll_ms
        self.read_stats()
        self.read_links()
        self.read_timestamps()
        self.conntrack.resync_needed = False
        if self._overruns != before:
            self._resync.set()  # events were lost during this dump: dump again at once
        self.polls += 1
        self.last_poll = time.monotonic()
        metrics.POLL_SECONDS.observe(self.last_poll - started)
        metrics.ENTRIES.set(result.entries)
        metrics.FLOWS.set(self.table.tracked)
        metrics.OPEN_DELTAS.set(len(self.table.deltas))
        self.table.stats["dying_in_dump"] += self.conntrack.dying_skipped - self._dying
        self._dying = self.conntrack.dying_skipped
        for event, count in self.table.stats.items():
            metrics.TABLE.labels(event).inc(count)
        self.table.stats.clear()

    def read_stats(self) -> None:
        """Conntrack's statistics: metrics, the span's table drops, a warning when the table is near full."""
        try:
            stats = self.conntrack.stats()
        except (OSError, ValueError) as exc:
            metrics.STATS_FAILURES.inc()
            log.warning("conntrack statistics unreadable: %r", exc)
            return
        for name, grown in ctstats.growth(self._stats, stats).items():
            if grown:
                metrics.CONNTRACK_STATS.labels(name).inc(grown)
        seen = stats.table_drops
        if self.drops_seen >= 0:
            self.table_drops += seen - self.drops_seen if seen >= self.drops_seen else seen
        self._stats, self.drops_seen = stats, seen
        metrics.TABLE_MAX.set(stats.max_entries)
        metrics.TABLE_FILL.set(stats.fill)
        full = stats.fill > FULL_TABLE
        if full and not self._full:
            log.warning(
                "conntrack table over %d%% full: new connections will be dropped and not metered",
                int(FULL_TABLE * 100),
                extra={"entries": stats.entries, "max": stats.max_entries},
            )
        elif self._full and not full:
            log.info("conntrack table below %d%% full again", int(FULL_TABLE * 100))
        self._full = full

    def read_links(self) -> None:
        """The external interfaces' byte counters: their growth since the last poll joins the open span."""
        if self.links is None:
            return
        if self.boundary is None:
            self.read_layout()
        if not self.external:  # nothing to compare with: this span is not measured
            self.link_bytes, self.link_meter.last = -1, {}
            return
        try:
            counters = self.links.bytes_of(list(self.external))
        except (OSError, ValueError) as exc:
            metrics.LINK_FAILURES.inc()
            if self.link_meter.last:  # once per failure, not once per poll
                log.warning("interface counters unreadable: this span's link bytes are not measured: %r", exc)
            self.link_bytes = -1
            self.link_meter.last = {}
            return
        grown = self.link_meter.observe(counters)
        if self.link_bytes >= 0:
            self.link_bytes += grown
        metrics.LINK_BYTES.inc(grown)

    def read_layout(self) -> None:
        """The node's interfaces, addresses and routes: which interfaces are external, what is inside."""
        if self.links is None:
            return
        try:
            layout = self.links.layout()
        except (OSError, ValueError) as exc:
            metrics.LINK_FAILURES.inc()
            log.warning("interfaces and routes unreadable: %r", exc)
            layout = Layout()
        external = layout.external(self.settings.external_interfaces)
        if external != self.external or self.boundary is None:
            log.info("external interfaces", extra={"interfaces": sorted(external.values())})
            if not external:
                log.warning(
                    "no external interface found (name them with --external-interfaces): "
                    "reports will not measure source coverage"
                )
        self.external = external
        self.boundary = Boundary(layout, external=external)
        self.own_addresses = layout.addresses

    def read_timestamps(self) -> None:
        """Whether conntrack stamps creation times now: the gauge, and the open span's ledger state."""
        on = self.conntrack.timestamps()
        metrics.TIMESTAMPS.set(1 if on else 0)
        now = TIMESTAMPS_UNKNOWN if on is None else int(on)
        self.span_stamps = now if self.span_stamps is None else reports.stamps_of_both(self.span_stamps, now)

    def read_dns(self) -> None:
        """Every DNS answer waiting on the watch socket, into the cache (no-op without ``--dns-names``)."""
        dns = self.dns
        if dns is None:
            return
        metrics.DNS_ANSWERS.inc(dns.read(now=self.clock()))
        seen = (dns.cache.conflicts, dns.cache.evictions, dns.lost)
        for metric, now, before in zip(
            (metrics.DNS_CONFLICTS, metrics.DNS_EVICTIONS, metrics.DNS_LOST),
            seen,
            self._dns_seen,
            strict=True,
        ):
            if now != before:
                metric.inc(now - before)
        self._dns_seen = seen
        metrics.DNS_ENTRIES.set(len(dns.cache))

    def _names(self, rows: list[RawRow], *, since_ms: int, until_ms: int) -> dict[bytes, str] | None:
        """The DNS names of the rows' addresses (either end of each) valid in the span; then the
        entries no later report can need are dropped."""
        dns = self.dns
        if dns is None:
            return None
        self.read_dns()
        names: dict[bytes, str] = {}
        if rows and len(dns.cache):
            names, ambiguous = dns.cache.names_of(
                map(_ORIG_SRC, rows), map(_REPLY_SRC, rows), since=since_ms / 1000
            )
            metrics.DNS_NAMED.inc(len(names))
            metrics.DNS_AMBIGUOUS.inc(ambiguous)
        dns.cache.expire(before=until_ms / 1000)
        metrics.DNS_ENTRIES.set(len(dns.cache))
        return names

    def tick(self, *, final: bool = False) -> None:
        """One poll, then a report if the interval is over (or ``final``), then a checkpoint."""
        now = self.clock()
        step = self.settings.interval
        if not self.interval_start:
            self.interval_start = int(now // step * step)
        self.poll()
        if final or not self.interval_start <= now < self.interval_start + step:  # over (or clock went back)
            self._cut(self.interval_start)
            if not final:
                self.interval_start = int(now // step * step)
        elif len(self.table.deltas) >= self.settings.max_flows:
            metrics.EARLY_CUTS.inc()
            self._cut(self.interval_start)
        self.checkpoint()
        metrics.LAST_POLL.set(now)  # last: a reader who sees it sees this tick's report and checkpoint

    def _cut(self, start: int, *, boot: str = "") -> None:
        deltas = self.table.take()
        rows, dropped = report(deltas, protocols=self.protocols)
        dropped["no_delta"] += sum(1 for key in self.table.last if key not in deltas)
        for reason, count in dropped.items():
            metrics.DROPPED.labels(reason).inc(count)
        measured = self.links is not None and self.link_bytes >= 0 and self.boundary is not None
        coverage = Coverage(
            span_from_ms=self.span_from_ms or start * 1000,
            span_to_ms=self.last_poll_ms or (start + self.settings.interval) * 1000,
            flows=self.table.tracked,
            events_lost=self.events_lost,
            table_drops=self.table_drops,
            link_bytes=self.link_bytes if measured else -1,
            boundary_bytes=self.boundary.crossing_bytes(rows) if measured and self.boundary else 0,
            timestamps=TIMESTAMPS_UNKNOWN if self.span_stamps is None else self.span_stamps,
        )
        self.span_from_ms, self.events_lost, self.table_drops = coverage.span_to_ms, 0, 0
        self.span_stamps = None
        metrics.BOUNDARY_BYTES.inc(coverage.boundary_bytes)
        if self.links is not None:
            self.link_bytes = 0 if self.link_meter.last else -1  # no baseline: the next span is not measured
            self.read_layout()
        names = self._names(rows, since_ms=coverage.span_from_ms, until_ms=coverage.span_to_ms)
        new = reports.build(
            rows,
            node=self.settings.node_name,
            boot=boot or self.boot,
            start=start,
            seconds=self.settings.interval,
            seq=self._seq(),
            max_bytes=self.settings.max_message_bytes,
            coverage=coverage,
            owners=self._owners(rows),
            names=names,
            key=self.id_key,
        )
        self.backlog.add(new)
        metrics.REPORTS.inc()
        log.info(
            "interval cut",
            extra={
                "start": start,
                "seq": new.seq,
                "rows": new.rows,
                "chunks": len(new.chunks),
                "span_ms": coverage.span_to_ms - coverage.span_from_ms,
                "events_lost": coverage.events_lost,
                "table_drops": coverage.table_drops,
                "link_bytes": coverage.link_bytes,
                "boundary_bytes": coverage.boundary_bytes,
                "backlog": len(self.pending),
                "flows": self.table.tracked,
                **({} if names is None else {"named": len(names)}),
                **dropped,
            },
        )

    def _owners(self, rows: list[RawRow]) -> dict[int, str]:
        """The pods owning the node's sockets of ``rows`` (``owners``); none when off or unreadable."""
        own = self.own_addresses
        if self.sockets is None or not own or not rows:
            return {}
        candidates = []
        for j, row in enumerate(rows):
            if row[3] in own:
                candidates.append((j, 0))
            elif row[7] in own:
                candidates.append((j, 1))
        if not candidates:
            return {}
        try:
            return self.sockets.owners(rows, candidates)
        except (OSError, ValueError) as exc:
            metrics.LINK_FAILURES.inc()
            log.warning("socket owners unreadable: this report names none: %r", exc)
            return {}

    def _seq(self) -> int:
        self.next_seq += 1
        return self.next_seq - 1

    def checkpoint(self) -> None:
        """Save the state; then delete report files it no longer lists."""
        started = time.monotonic()
        self.state_dir.save(
            State(
                node=self.settings.node_name,
                boot=self.boot,
                next_seq=self.next_seq,
                interval_start=self.interval_start,
                pending=[r.seq for r in self.pending],
                last=self.table.last,
                missing=list(self.table.missing),
                destroyed=list(self.table.destroyed),
                deltas=self.table.deltas,
                ledger=self._ledger_state(),
            )
        )
        self.backlog.saved()
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - started)

    # -- loops --------------------------------------------------------------------------------------

    async def poll_loop(self, stop: asyncio.Event) -> None:
        period = self.settings.poll_interval_s
        while not stop.is_set():
            now = self.clock()
            boundary = self.interval_start + self.settings.interval if self.interval_start else now
            delay = max(0.0, min((now // period + 1) * period, max(boundary, now)) - now)
            if self.polls and delay > 0:
                self._resync.clear()
                await wait_any(self._resync, stop, within=delay)
                if stop.is_set():
                    break
            self.tick()
        self.tick(final=True)
        self.backlog.finish()

    def healthy(self) -> bool:
        return time.monotonic() - self.last_poll < self.settings.stall_after_s

    def ready(self) -> bool:
        """Polled at least once, and RAW takes its reports (a full store makes it not ready)."""
        return self.polls > 0 and not self.publisher.store_full

    def on_events(self) -> None:
        metrics.EVENTS.inc(self.conntrack.read_events(self.table.destroy))
        if self.conntrack.resync_needed:
            self._resync.set()

    async def main(self, stop: asyncio.Event) -> int:
        """Run until ``stop``; then drain. The process exit code."""
        loop = asyncio.get_running_loop()
        self.resume()
        fd = self.conntrack.event_fd()
        if fd >= 0:
            loop.add_reader(fd, self.on_events)
        server = serve(self.settings.http, healthy=self.healthy, ready=self.ready)
        try:
            async with RootTasks(stop) as tasks:
                tasks.start("poll", self.poll_loop(stop))
                tasks.start("publish", self.backlog.run(stop))
        finally:
            if fd >= 0:
                loop.remove_reader(fd)
            await self.publisher.close()
            if server is not None:
                server.close()
        return tasks.exit_code
