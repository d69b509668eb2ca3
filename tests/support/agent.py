"""The agent as a real process against a lab node and a real nats-server (``AgentProcess``), and the RAW it
published read back and compared with the kernel's counters."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubenetmon.cli.natsserver import free_port
from kubenetmon.shared.broker import Broker
from kubenetmon.shared.schema import RawMessage, decode_raw
from kubenetmon.shared.settings import NatsSettings
from tests.fixtures.lab import Node
from tests.fixtures.lab_kernel import CtEntry
from tests.fixtures.lab_traffic import Flow
from tests.support import http
from tests.support.commands import KUBENETMON
from tests.support.waiting import wait_until

FlowId = tuple[str, str, str, int, int]


def flow_id(flow: Flow) -> FlowId:
    return (
        flow.proto,
        str(ipaddress.ip_address(flow.src)),
        str(ipaddress.ip_address(flow.dst)),
        flow.sport,
        flow.dport,
    )


@dataclass
class AgentProcess:
    """``kubenetmon agent`` reading ``node`` and publishing to ``nats``; logs kept in ``log``."""

    node: Node
    nats: NatsSettings
    state_dir: Path
    log: Path
    interval: int = 1
    poll: float = 0.25
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        n = self.nats
        return [
            *KUBENETMON, "agent", "--node-name", self.node.name, "--netns", self.node.netns,
            "--interval", str(self.interval), "--poll-interval", str(self.poll),
            "--state-dir", str(self.state_dir),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(self.port),
            "--nats-url", ",".join(n.urls), "--nats-stream-prefix", n.stream_prefix,
            "--nats-subject-prefix", n.subject_prefix, "--nats-duplicate-window", "120s",
            "--nats-raw-max-age", "1h", "--nats-enriched-max-age", "1h", "--nats-dlq-max-age", "1h",
            "--nats-raw-max-bytes", str(n.raw_max_bytes), "--nats-dlq-max-bytes", str(n.dlq_max_bytes),
            "--nats-enriched-max-bytes", str(n.enriched_max_bytes),
            "--nats-meta-max-bytes", str(n.meta_max_bytes),
            "--nats-connect-timeout", "1s", "--nats-publish-timeout", "2s", "--nats-reconnect-wait", "50ms",
            "--nats-reconnect-max-wait", "500ms", "--drain-timeout", "10s", "--log-format", "text",
            *self.extra,
        ]  # fmt: skip

    def start(self) -> AgentProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT)
        return self

    def metrics(self) -> dict[str, float]:
        """Unlabelled samples of /metrics ({} while the server is not up)."""
        try:
            status, text = http.get(self.port, "/metrics", timeout=2)
        except OSError:
            return {}
        return http.samples(text) if status == 200 else {}

    def probe(self, path: str) -> int:
        return http.get(self.port, path, timeout=2)[0]

    def polled_after(self, moment: float, *, timeout: float = 20) -> None:
        """Wait until the agent completed a poll that started after ``moment`` (Unix time)."""
        wait_until(
            lambda: self.metrics().get("kubenetmon_agent_last_poll_timestamp_seconds", 0) > moment,
            timeout=timeout,
            what="an agent poll",
        )

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def read_raw(settings: NatsSettings) -> list[RawMessage]:
    """Every RAW message in the stream, in stream order."""

    async def fetch() -> list[RawMessage]:
        async with await Broker.connect(settings, name="test-reader", wait_s=5) as broker:
            try:
                info = await broker.stream_info("raw")
            except Exception:
                return []
            if info.messages == 0:
                return []
            source = await broker.ephemeral("raw")
            out: list[RawMessage] = []
            while len(out) < info.messages:
                for delivery in await source.fetch(500, 2.0):
                    out.append(decode_raw(delivery.data))
                    await delivery.ack()
            await source.close()
            return out

    return asyncio.run(fetch())


def totals(messages: list[RawMessage]) -> dict[FlowId, tuple[int, int, int, int]]:
    """Sum of every published row per original tuple."""
    acc: dict[FlowId, list[int]] = {}
    for msg in messages:
        for r in msg.rows:
            fid = (
                {6: "tcp", 17: "udp"}[r.proto],
                str(ipaddress.ip_address(r.orig_src)),
                str(ipaddress.ip_address(r.orig_dst)),
                r.orig_sport,
                r.orig_dport,
            )
            a = acc.setdefault(fid, [0, 0, 0, 0])
            for i, v in enumerate(r[11:]):
                a[i] += v
    return {k: (a[0], a[1], a[2], a[3]) for k, a in acc.items()}


def identities(messages: list[RawMessage]) -> Counter[tuple[object, ...]]:
    """How often each row identity (message id + row tuple) occurs: each must occur once."""
    return Counter((m.msg_id, *r[:11]) for m in messages for r in m.rows)


def kernel_counters(
    node: Node, flows: list[Flow], destroyed: list[CtEntry]
) -> dict[FlowId, tuple[int, int, int, int]]:
    """The kernel's counters per flow: final ones from DESTROY events, else the table's."""
    table = node.conntrack_table()
    out: dict[FlowId, tuple[int, int, int, int]] = {}
    for flow in flows:
        fid = flow_id(flow)
        entries = [e for e in [*destroyed, *table] if (e.proto, *e.orig) == fid]
        assert len(entries) == 1, (fid, entries)
        out[fid] = entries[0].counters
    return out


def wait_exact(
    node: Node,
    nats: NatsSettings,
    flows: list[Flow],
    destroyed: Callable[[], list[CtEntry]],
    *,
    timeout: float = 30,
) -> list[RawMessage]:
    """Wait until the published totals of ``flows`` equal the kernel's counters; return the messages."""
    state: dict[str, object] = {}

    def exact() -> bool:
        messages = read_raw(nats)
        got, want = totals(messages), kernel_counters(node, flows, destroyed())
        state.update(messages=messages, got={k: got.get(k) for k in want}, want=want)
        return all(got.get(k) == v for k, v in want.items())

    try:
        wait_until(exact, timeout=timeout, what="published totals to equal the kernel's", step=0.2)
    except TimeoutError:
        raise AssertionError(f"published {state.get('got')} != kernel {state.get('want')}") from None
    return state["messages"]  # type: ignore[return-value]
