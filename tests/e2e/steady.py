"""Steady, known traffic for the fault suite: long-lived connections exchanging random amounts, paced,
and short flows alongside them.

Each long-lived connection stays open across every fault (the lab's network is never touched by one), so
its conntrack entry lives on and an agent restarted after a SIGKILL finds its counters where the kernel
kept counting. Every tick also makes two short flows, alternating IPv4 and IPv6: a TCP connection from
web-0 to db-0 (connect, one exchange, close) and a UDP exchange from db-0 to web-1 from a new socket (one
datagram each way). They close at once but their conntrack entries stay (TIME_WAIT, UDP timeout) for
longer than any fault lasts, so a restarted agent still finds them: a flow born and gone while the agent
is down cannot be metered by anyone, and is not what this suite is about (the churn test is).

The amounts are drawn from the test's seeded generator (reproducible with its seed);
the kernel's counters, not these amounts, are the ground truth. An exchange that fails is recorded and
fails the test: the faults under test must never break the traffic itself.

It must not pace anything but itself: tests wait on conditions, never on this generator.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from tests.e2e.cluster import SERVICE, Cluster, add_service
from tests.fixtures.lab_traffic import Flow

TICK_S: Final = 0.15


@dataclass
class Conn:
    name: str
    client: Any
    up: tuple[int, int]
    down: tuple[int, int]
    exchanges: int = 0


@dataclass
class Steady:
    cluster: Cluster
    rng: random.Random
    conns: list[Conn] = field(default_factory=list)
    short: list[Flow] = field(default_factory=list)
    """The short flows made so far (closed)."""
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _servers: dict[str, Any] = field(default_factory=dict)

    def prepare(self) -> Steady:
        """Servers and the Service (its DNAT and inventory object): before the pipeline starts."""
        c = self.cluster
        web1, db0 = c.pods["web-1"], c.pods["db-0"]
        self._servers = {
            "web-1 tcp4": web1.server("tcp", family=4),
            "web-1 udp4": web1.server("udp", family=4),
            "db-0 tcp6": db0.server("tcp", family=6),
            "db-0 tcp4": db0.server("tcp", family=4),
            "service": db0.server("tcp", family=4),
            "internet tcp6": c.internet.server("tcp", family=6),
            "s3 udp6": c.s3.server("udp", family=6),
            "web-1 udp6": web1.server("udp", family=6),
        }
        add_service(c, target_port=self._servers["service"].port)
        return self

    def open(self) -> Steady:
        """Open every connection (the plan below) and exchange once on each."""
        c, s = self.cluster, self._servers
        web0, web1, db0 = c.pods["web-0"], c.pods["web-1"], c.pods["db-0"]
        vip, port = SERVICE[2], SERVICE[3]
        plan: list[tuple[str, Any, tuple[int, int], tuple[int, int]]] = [
            ("same-node tcp4", web0.tcp_connect(s["web-1 tcp4"]), (100, 4000), (100, 9000)),
            ("cross-zone tcp6", web0.tcp_connect(s["db-0 tcp6"]), (500, 3000), (100, 20_000)),
            ("service tcp4", web1.tcp_connect(s["service"], dst=vip, dport=port), (200, 2000), (200, 6000)),
            ("cross-zone udp4", db0.udp_client(s["web-1 udp4"]), (20, 1200), (0, 2400)),
            ("internet tcp6", web1.tcp_connect(s["internet tcp6"]), (50, 800), (100, 3000)),
            ("s3 udp6", db0.udp_client(s["s3 udp6"]), (100, 1000), (0, 1200)),
            ("ingress tcp4", c.internet.tcp_connect(s["db-0 tcp4"]), (10, 500), (100, 5000)),
        ]
        for name, client, up, down in plan:
            conn = Conn(name, client, up, down)
            self.conns.append(conn)
            self._exchange(conn)
        return self

    def _exchange(self, conn: Conn) -> None:
        up = self.rng.randint(*conn.up)
        down = self.rng.randint(*conn.down)
        conn.client.exchange(max(up, 8), down)
        conn.exchanges += 1

    def start(self) -> Steady:
        self._thread = threading.Thread(target=self._run, name="steady-traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            for conn in self.conns:
                try:
                    self._exchange(conn)
                except OSError as exc:
                    self.errors.append(f"{conn.name}: {exc!r}")
                    return
            try:
                self._short_flows(family=4 if len(self.short) % 4 == 0 else 6)
            except OSError as exc:
                self.errors.append(f"short flow: {exc!r}")
                return

    def _short_flows(self, *, family: int) -> None:
        c, s = self.cluster, self._servers
        tcp = c.pods["web-0"].tcp_connect(s[f"db-0 tcp{family}"])
        tcp.exchange(self.rng.randint(8, 5000), self.rng.randint(1, 8000))
        self.short.append(tcp.close())
        udp = c.pods["db-0"].udp_client(s[f"web-1 udp{family}"])
        udp.exchange(self.rng.randint(4, 1200), self.rng.randint(1, 1200))
        self.short.append(udp.close())

    def stop(self) -> None:
        """Stop exchanging and close every connection in order (TCP: FIN both ways)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for conn in self.conns:
            conn.client.close()

    @property
    def exchanges(self) -> int:
        return sum(c.exchanges for c in self.conns)
