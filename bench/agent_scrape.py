"""Benchmark: the agent's full scrape (dump + decode + deltas) against ``conntrack -L -o extended``.

For 10k, 100k and 250k entries in a network namespace of its own, it alternates, several times, the
baseline ``conntrack -L -o extended > /dev/null`` and the agent's scrape (a steady-state poll: every flow
already has a baseline), measuring CPU time (user + system, which includes the kernel's dump work) and wall
time, and prints medians and the entries/s ratio (ours / conntrack's; > 1 means faster). Then it runs the
real ``kubenetmon agent`` process on the 250k table for a while and reports its RSS and CPU share.
``--agent-args`` adds flags to that agent (e.g. ``--dns-names``); ``--dns-rate N`` sends N DNS answers a
second (UDP from port 53 on the namespace's loopback, each naming one of 10k addresses) while it runs,
so the DNS watch has work; ``--agent-runs K`` runs the agent K times and prints the median CPU per poll.
With ``--sizes 0`` the scrape comparison is skipped (the table is still filled for the agent).
``--dns-watch-rate N`` (this branch's code only) measures in this process, alternating, the CPU of a steady
poll's scrape of the 250k table and of the DNS watch's work for one poll's worth of N answers/s (read and
parse the 5 s of answers queued on its socket), plus a report cut's name lookup for 250k rows' addresses
spread over the 12 polls of an interval; prints medians and the watch's share of a poll.

``--compare-pairs K`` (the way to judge a flag's CPU cost on a busy machine) runs K times two real agent
processes side by side on the 250k table, one with ``--compare-off`` (default ``--skip-link-stats``) and
one with ``--compare-on`` (default ``--dns-names``, link statistics on), the same ``--dns-rate`` answers
reaching both, and measures each one's CPU (the run time of its threads, what ``perf stat -e task-clock``
counts) per poll (its own poll counter) over ``--compare-seconds``; it prints each pair's ratio, the load
average, and the median and spread of the ratios. Side by side, both see the same table and the same
load; alternating runs on a shared machine do not (the same code varied by a third from run to run).

Then the dump tool: on a table of ``--dump-entries`` entries it alternates, several times, whole processes
``conntrack -L -o extended`` and ``kubenetmon conntrack dump`` (text, ``--format json``, ``--summary``),
each run with ``ip netns exec`` and its output to /dev/null, and prints the median wall times and the
speed ratio of each (conntrack's time / ours; >= 1 means at least as fast), measured in the same run.

Each scrape also reads the byte counters of two interfaces over rtnetlink, as the agent's poll does for
the node's external interfaces (``--no-link-stats``: the dump alone).

Entries are inserted with ``conntrack -R``: their counters are zero, which is fine for a scrape benchmark
(every entry is still decoded and looked up). Needs root. Everything it creates is removed at the end.

    .venv/bin/python bench/agent_scrape.py [--rounds 7] [--sizes 10000,100000,250000] [--agent-seconds 30]
        [--dump-entries 200000] [--agent-args "--dns-names"] [--dns-rate 200] [--agent-runs 1]
        [--compare-pairs 6 --compare-seconds 60 --compare-on "--dns-names" --compare-off "--skip-link-stats"]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from operator import itemgetter
from pathlib import Path

from kubenetmon.agent.conntrack import Conntrack
from kubenetmon.agent.flows import FlowTable
from kubenetmon.agent.links import Links

KUBENETMON = str(Path(sys.executable).parent / "kubenetmon")
RULES = (
    "table inet bench {\n  chain c { type filter hook input priority 0; ct state new counter accept; }\n}\n"
)


def sh(*cmd: str, stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True)


def populate(netns: str, n: int) -> None:
    """``n`` entries: 70% TCP/IPv4, 20% UDP/IPv4, 10% TCP/IPv6, a tenth of them in zone 7."""
    sh("ip", "netns", "exec", netns, "conntrack", "-F")
    lines = []
    for i in range(n):
        a, b, port = i >> 16 & 255, i >> 8 & 255, 1024 + (i & 255)
        zone = " -w 7" if i % 10 == 3 else ""
        if i % 10 < 7:
            lines.append(f"-I -s 10.{a}.{b}.1 -d 10.200.0.1 -p tcp --sport {port} --dport 443 "
                         f"--state ESTABLISHED -u SEEN_REPLY,ASSURED -t 3600{zone}")  # fmt: skip
        elif i % 10 < 9:
            lines.append(f"-I -s 10.{a}.{b}.2 -d 10.200.0.53 -p udp --sport {port} --dport 53 -t 3600{zone}")
        else:
            lines.append(f"-I -s fd00::{a:x}:{b:x} -d fd00::1 -p tcp --sport {port} --dport 443 "
                         f"--state ESTABLISHED -u SEEN_REPLY -t 3600")  # fmt: skip
    sh("ip", "netns", "exec", netns, "conntrack", "-R", "-", stdin="\n".join(lines) + "\n")
    count = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-C"], capture_output=True, text=True, check=True
    )
    if int(count.stdout) != n:  # the table's limit is shared by every namespace of the host
        raise SystemExit(f"the conntrack table took {count.stdout.strip()} of {n} entries")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def baseline(netns: str) -> tuple[float, float]:
    cpu, wall = children_cpu(), time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-o", "extended"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return children_cpu() - cpu, time.perf_counter() - wall


LINKS: list[tuple[Links, list[int]]] = []
"""The agent's link statistics reader and its external interfaces, when ``--link-stats`` (the default)."""


def scrape(conntrack: Conntrack, table: FlowTable, *, link_stats: bool = True) -> tuple[float, float, int]:
    """What a poll reads: the dump into the delta table, and the external interfaces' byte counters."""
    cpu, wall = time.process_time(), time.perf_counter()
    table.begin_dump()
    result = conntrack.dump(table.observe)
    table.end_dump(consistent=result.consistent)
    if link_stats:
        for links, indexes in LINKS:
            links.bytes_of(indexes)
    return time.process_time() - cpu, time.perf_counter() - wall, result.entries


def compare(netns: str, n: int, rounds: int) -> None:
    populate(netns, n)
    conntrack = Conntrack(netns=netns, events=False)
    table = FlowTable()
    cold_cpu, _, entries = scrape(conntrack, table)  # first sighting of every flow
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(baseline(netns))
        cpu, wall, entries = scrape(conntrack, table)
        ours.append((cpu, wall))
    if LINKS:  # the same scrape without the link statistics, alternating, in this process
        with_links, without = [], []
        for _ in range(rounds):
            without.append(scrape(conntrack, table, link_stats=False)[0])
            with_links.append(scrape(conntrack, table)[0])
        w, wo = statistics.median(with_links), statistics.median(without)
        print(
            f"{entries:>7} entries | scrape cpu with link statistics {w:.4f}s, "
            f"without {wo:.4f}s: {w / wo:.3f}x"
        )
    conntrack.close()
    c_cpu, c_wall = (statistics.median(x) for x in zip(*theirs, strict=True))
    o_cpu, o_wall = (statistics.median(x) for x in zip(*ours, strict=True))
    print(
        f"{entries:>7} entries | conntrack -L: cpu {c_cpu:.3f}s wall {c_wall:.3f}s "
        f"({entries / c_cpu:>9,.0f}/s) | agent scrape: cpu {o_cpu:.3f}s wall {o_wall:.3f}s "
        f"({entries / o_cpu:>9,.0f}/s), first {cold_cpu:.3f}s | "
        f"ratio cpu {c_cpu / o_cpu:.2f}x wall {c_wall / o_wall:.2f}x",
        flush=True,
    )


def wall(netns: str, *cmd: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", netns, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - start


DUMP_TOOL = {
    "text": (KUBENETMON, "conntrack", "dump"),
    "json": (KUBENETMON, "conntrack", "dump", "--format", "json"),
    "summary": (KUBENETMON, "conntrack", "dump", "--summary"),
}


def dump_tool(netns: str, n: int, rounds: int) -> None:
    """Whole processes to /dev/null: ``conntrack -L -o extended``, then each ``kubenetmon conntrack dump``."""
    populate(netns, n)
    times: dict[str, list[float]] = {"conntrack": [], **{name: [] for name in DUMP_TOOL}}
    for _ in range(rounds):
        times["conntrack"].append(wall(netns, "conntrack", "-L", "-o", "extended"))
        for name, cmd in DUMP_TOOL.items():
            times[name].append(wall(netns, *cmd))
    base = statistics.median(times["conntrack"])
    parts = [f"conntrack -L -o extended {base:.2f}s"]
    for name in DUMP_TOOL:
        ours = statistics.median(times[name])
        parts.append(f"dump {name} {ours:.2f}s ({base / ours:.2f}x)")
    print(
        f"dump tool, {n} entries, median of {rounds} (ratio: conntrack's time / ours): " + " | ".join(parts),
        flush=True,
    )


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dns_answers(netns: str, rate: float, stop: threading.Event) -> None:
    """Send ``rate`` DNS answers a second from 127.0.0.1:53 in ``netns`` until ``stop`` (pre-built:
    the sender's own cost stays small)."""
    from kubenetmon.agent.conntrack import in_netns

    packets = [_answer(i) for i in range(10_000)]
    sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("127.0.0.1", 53))
    i, start = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while i < due:
            sock.sendto(packets[i % len(packets)], ("127.0.0.1", 40053))
            i += 1
        stop.wait(0.01)
    sock.close()


def dns_compare(netns: str, rounds: int, rate: float) -> None:
    """Scrape CPU per poll vs the DNS watch's CPU per poll at ``rate`` answers/s, alternating, in-process."""
    from kubenetmon.agent.conntrack import in_netns
    from kubenetmon.agent.dnscache import DnsCache
    from kubenetmon.agent.dnswatch import DnsWatch

    conntrack, table = Conntrack(netns=netns, events=False), FlowTable()
    scrape(conntrack, table)
    watch = DnsWatch(DnsCache(grace_s=120, max_entries=65536), netns=netns)
    sender = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sender.bind(("127.0.0.1", 53))
    packets = [_answer(i) for i in range(10_000)]
    rows = [(i.to_bytes(4, "big"), (i + 1).to_bytes(4, "big")) for i in range(250_000)]
    per_poll, sent = int(rate * 5), 0
    scrapes, dns, lookups = [], [], []
    for _ in range(rounds):
        scrapes.append(scrape(conntrack, table)[0])
        for _ in range(per_poll):
            sender.sendto(packets[sent % len(packets)], ("127.0.0.1", 40053))
            sent += 1
        cpu = time.process_time()
        read = watch.read(now=time.time())
        dns.append(time.process_time() - cpu)
        cpu = time.process_time()
        watch.cache.names_of(map(itemgetter(0), rows), map(itemgetter(1), rows), since=0)  # as the cut
        lookups.append((time.process_time() - cpu) / 12)
        assert read == per_poll and watch.lost == 0, (read, watch.lost)
    watch.close()
    sender.close()
    conntrack.close()
    s, d, lk = (statistics.median(x) for x in (scrapes, dns, lookups))
    print(
        f"DNS watch at {rate:g} answers/s, 5 s polls, 250k flows, median of {rounds}: "
        f"scrape {s:.3f} s CPU per poll; watch {d * 1000:.1f} ms per poll ({d / per_poll * 1e6:.0f} us per "
        f"answer); cut lookup {lk * 1000:.1f} ms per poll (250k rows, {len(watch.cache)} names); "
        f"watch + lookup = {(d + lk) / s:.1%} of a poll",
        flush=True,
    )


def _answer(i: int) -> bytes:
    """``h<i>.bench.example A 10.9.x.y``, built by hand (the baseline's environment has no DNS library)."""
    name = b"".join(bytes([len(label)]) + label for label in (f"h{i}".encode(), b"bench", b"example"))
    question = name + b"\x00\x00\x01\x00\x01"
    address = bytes([10, 9, i >> 8 & 255, i & 255])
    record = b"\xc0\x0c\x00\x01\x00\x01" + (300).to_bytes(4, "big") + b"\x00\x04" + address
    return i.to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + record


def thread_ns(pid: int) -> int:
    """CPU time of the process's live threads, in ns (``/proc/<pid>/task/*/schedstat``, what ``perf stat
    -e task-clock`` counts), exact where ``/proc/<pid>/stat`` counts clock ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return total


def polls_done(port: int) -> int:
    """The agent's completed polls (``kubenetmon_agent_poll_duration_seconds_count`` on its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("kubenetmon_agent_poll_duration_seconds_count"):
                return int(float(line.split()[-1]))
    return 0


def idle_sample(pid: int, port: int) -> tuple[int, int]:
    """(thread CPU ns, polls done), taken while the agent sleeps between polls: its state is S at two
    reads 0.2 s apart with no CPU used between them (a poll under way, even one waiting for a CPU on a
    busy machine, is R or uses CPU)."""
    while True:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        before = thread_ns(pid)
        time.sleep(0.2)
        again = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == again == "S" and thread_ns(pid) == before:
            return before, polls_done(port)


def poll_cpu(
    netns: str, workdir: Path, *, arms: dict[str, list[str]], dns_rate: float, seconds: float
) -> dict[str, tuple[float, int]]:
    """Real agent processes, one per arm (its flags), side by side on the same table at the same time:
    per arm, the CPU (user + system, all threads) per poll over about ``seconds``, and the polls counted.

    Side by side, both see the same table, the same DNS answers and the same load on the machine, which
    alternating runs do not. Polls are counted (the agent's own poll counter), not assumed one per 5 s:
    on a busy machine a starved agent polls less often, and CPU per 5 s would then measure the share the
    scheduler gave it, not the work of a poll. Each window starts and ends while the agent sleeps."""
    from kubenetmon.cli.natsserver import NatsServer, free_port

    ports = {arm: free_port() for arm in arms}
    with NatsServer(workdir / "nats") as server:
        procs = {
            arm: subprocess.Popen(
                [
                    KUBENETMON,
                    "agent",
                    "--node-name",
                    f"bench-{arm}",
                    "--netns",
                    netns,
                    "--skip-sanity-check",
                    "--state-dir",
                    str(workdir / f"state-{arm}"),
                    "--metrics-host",
                    "127.0.0.1",
                    "--metrics-port",
                    str(ports[arm]),
                    "--nats-url",
                    server.url,
                    "--poll-interval",
                    "5",
                    "--interval",
                    "60",
                    "--log-level",
                    "warning",
                    *flags,
                ],
                stderr=subprocess.DEVNULL,
            )
            for arm, flags in arms.items()
        }
        stop = threading.Event()
        sender = threading.Thread(target=dns_answers, args=(netns, dns_rate, stop), daemon=True)
        if dns_rate > 0:
            sender.start()
        try:
            deadline = time.monotonic() + 300
            for arm in arms:  # the cold first poll and one warm one are not measured
                while True:
                    try:
                        if polls_done(ports[arm]) >= 2:
                            break
                    except OSError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the {arm} agent did not poll twice within 300 s")
                    time.sleep(0.5)
            first = {arm: idle_sample(proc.pid, ports[arm]) for arm, proc in procs.items()}
            time.sleep(seconds)
            last = {arm: idle_sample(proc.pid, ports[arm]) for arm, proc in procs.items()}
            out = {}
            for arm in arms:
                polls = last[arm][1] - first[arm][1]
                out[arm] = ((last[arm][0] - first[arm][0]) / 1e9 / max(polls, 1), polls)
            return out
        finally:
            stop.set()
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(300)  # the last tick and drain of a 250k table take long on a busy machine
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def agent_compare(
    netns: str, pairs: int, *, on: list[str], off: list[str], dns_rate: float, seconds: float
) -> None:
    """``pairs`` times an agent without and one with ``on``, side by side (the starting order alternates),
    the same DNS traffic for both: per pair each one's CPU per poll, their ratio and the load average;
    then the medians and spreads of those."""
    per_poll: dict[str, list[float]] = {"off": [], "on": []}
    ratios = []
    for i in range(pairs):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
            cpu = poll_cpu(
                netns,
                Path(tmp),
                arms={arm: on if arm == "on" else off for arm in order},
                dns_rate=dns_rate,
                seconds=seconds,
            )
        for arm in order:
            per_poll[arm].append(cpu[arm][0])
        ratios.append(cpu["on"][0] / cpu["off"][0])
        print(
            f"  pair {i + 1}: CPU per poll off {cpu['off'][0]:.3f} s ({cpu['off'][1]} polls), "
            f"on {cpu['on'][0]:.3f} s ({cpu['on'][1]} polls): on/off {ratios[-1]:.3f}x; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True,
        )
    off_m, on_m = statistics.median(per_poll["off"]), statistics.median(per_poll["on"])
    print(
        f"agent CPU per poll at 250k flows, {dns_rate:g} DNS answers/s, {pairs} pairs side by side, "
        f"~{seconds:g} s each: off ({' '.join(off) or 'no flags'}) median {off_m:.3f} s "
        f"[{min(per_poll['off']):.3f}-{max(per_poll['off']):.3f}], on ({' '.join(on)}) median {on_m:.3f} s "
        f"[{min(per_poll['on']):.3f}-{max(per_poll['on']):.3f}]; per-pair on/off: median "
        f"{statistics.median(ratios):.3f}x [{min(ratios):.3f}-{max(ratios):.3f}]",
        flush=True,
    )


def run_agent(netns: str, seconds: float, workdir: Path, *, extra: list[str], dns_rate: float) -> float:
    """The real agent process on the populated table: RSS and CPU share with 5 s polls; CPU s per poll."""
    from kubenetmon.cli.natsserver import NatsServer

    with NatsServer(workdir / "nats") as server:
        proc = subprocess.Popen(
            [KUBENETMON, "agent", "--node-name", "bench", "--netns", netns, "--skip-sanity-check",
             "--state-dir", str(workdir / "state"), "--metrics-port", "-1", "--nats-url", server.url,
             "--poll-interval", "5", "--interval", "60", "--log-level", "warning", *extra],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stop = threading.Event()
        sender = threading.Thread(target=dns_answers, args=(netns, dns_rate, stop), daemon=True)
        if dns_rate > 0:
            sender.start()
        try:
            time.sleep(7)  # start-up and the first (cold) poll are not part of the steady state
            start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
            peak = 0
            while time.monotonic() - start < seconds:
                time.sleep(1)
                peak = max(peak, int(proc_status(proc.pid)["VmRSS"].split()[0]))
            share = (cpu_seconds(proc.pid) - start_cpu) / (time.monotonic() - start)
            status = proc_status(proc.pid)
            print(
                f"agent process, 250k tracked flows, 5 s polls{' ' + ' '.join(extra) if extra else ''}"
                f"{f', {dns_rate:g} DNS answers/s' if dns_rate else ''}: RSS now {status['VmRSS'].strip()}, "
                f"peak sampled {peak / 1024:.0f} MB, high-water {status['VmHWM'].strip()}, "
                f"CPU {share:.3f} of a core ({share * 5:.3f} s per poll)",
                flush=True,
            )
            return share * 5
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", default="10000,100000,250000")
    parser.add_argument("--agent-seconds", type=float, default=30.0)
    parser.add_argument("--dump-entries", type=int, default=200_000, help="dump tool table size; 0: skip it")
    parser.add_argument(
        "--link-stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each scrape also reads the external interfaces' counters, as the agent's poll does",
    )
    parser.add_argument("--agent-args", default="", help="extra flags of the agent process")
    parser.add_argument(
        "--dns-rate", type=float, default=0.0, help="DNS answers a second during the agent run"
    )
    parser.add_argument("--agent-runs", type=int, default=1, help="agent runs (median CPU per poll)")
    parser.add_argument("--dns-watch-rate", type=float, default=0.0, help="in-process DNS watch cost at N/s")
    parser.add_argument(
        "--compare-pairs",
        type=int,
        default=0,
        help="pairs of agent runs without/with --compare-on, alternating",
    )
    parser.add_argument("--compare-on", default="--dns-names", help="the flags under test")
    parser.add_argument("--compare-off", default="--skip-link-stats", help="the baseline's flags")
    parser.add_argument("--compare-seconds", type=float, default=60.0, help="measured time per pair")
    args = parser.parse_args()
    netns = f"kb{os.getpid()}-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", netns)
    try:
        for path, value in (("nf_conntrack_acct", "1"), ("nf_conntrack_events", "1")):
            sh("ip", "netns", "exec", netns, "sysctl", "-qw", f"net.netfilter.{path}={value}")
        sh("ip", "netns", "exec", netns, "nft", "-f", "-", stdin=RULES)
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        # two external interfaces (a bonded pair's members, say), as the agent would read
        sh("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        if args.link_stats:
            links = Links(netns=netns)
            layout = links.layout()
            LINKS.append((links, [i for i, name in layout.names.items() if name in ("eth0", "eth1")]))
        sizes = [int(s) for s in args.sizes.split(",") if int(s) > 0]
        for n in sizes:
            compare(netns, n, args.rounds)
        if args.agent_seconds > 0 or args.dns_watch_rate > 0 or args.compare_pairs > 0:
            if not sizes or sizes[-1] != 250_000:
                populate(netns, 250_000)
        if args.compare_pairs > 0:
            agent_compare(
                netns,
                args.compare_pairs,
                on=shlex.split(args.compare_on),
                off=shlex.split(args.compare_off),
                dns_rate=args.dns_rate,
                seconds=args.compare_seconds,
            )
        if args.dns_watch_rate > 0:
            dns_compare(netns, args.rounds, args.dns_watch_rate)
        if args.agent_seconds > 0:
            per_poll = []
            for _ in range(args.agent_runs):
                with tempfile.TemporaryDirectory(prefix="kubenetmon-bench-") as tmp:
                    per_poll.append(
                        run_agent(
                            netns,
                            args.agent_seconds,
                            Path(tmp),
                            extra=shlex.split(args.agent_args),
                            dns_rate=args.dns_rate,
                        )
                    )
            if args.agent_runs > 1:
                print(f"agent CPU per poll, median of {args.agent_runs}: {statistics.median(per_poll):.3f} s")
        if args.dump_entries > 0:
            dump_tool(netns, args.dump_entries, args.rounds)
    finally:
        for links, _ in LINKS:
            links.close()
        subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-F"], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
