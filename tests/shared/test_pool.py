"""The supervisor as Kubernetes would run it: a real process tree, real signals, real HTTP probes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubenetmon.cli.natsserver import free_port
from tests.support import http
from tests.support.waiting import wait_until

DEADLINE_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


class Pool:
    def __init__(self, mode: str, workdir: Path, *, workers: int, max_crashes: int = 5) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "supervisor.log"
        args = [sys.executable, "-m", "tests.shared.pool_targets", mode, str(workdir), str(self.port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*args, str(workers), str(max_crashes)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            return http.get(self.port, path, timeout=2)
        except OSError:
            return 0, ""

    def pids(self, what: str = "pid") -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for path in self.workdir.glob(f"{what}-*"):
            _, index, pid = path.name.split("-")
            found.setdefault(int(index), []).append(int(pid))
        return found

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor did not exit; log:\n{self.log.read_text()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    started: list[Pool] = []

    def start(mode: str, **kwargs: int) -> Pool:
        workdir = tmp_path / f"pool-{len(started)}"
        workdir.mkdir()
        pool = Pool(mode, workdir, **kwargs)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.kill()


def test_sigkilled_child_is_replaced_and_sigterm_drains(pools: Callable[..., Pool]) -> None:
    pool = pools("steady", workers=2)
    wait_until(lambda: pool.get("/readyz")[0] == 200, timeout=DEADLINE_S, what="all workers ready")
    assert pool.get("/healthz")[0] == 200
    [victim] = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(pool.pids().get(0, [])) == 2, timeout=DEADLINE_S, what="worker 0 respawned")
    wait_until(lambda: pool.get("/readyz")[0] == 200, timeout=DEADLINE_S, what="ready again")
    status, text = pool.get("/metrics")
    assert status == 200
    assert "kubenetmon_test_workers_started_total 3.0" in text  # two, then the replacement
    assert 'kubenetmon_pool_restarts_total{pool="test"} 1.0' in text
    assert 'kubenetmon_pool_workers{pool="test"} 2.0' in text

    pool.proc.send_signal(signal.SIGTERM)
    assert pool.wait_exit() == 0
    live = {index: pids[-1] for index, pids in pool.pids().items()}
    live[0] = next(p for p in pool.pids()[0] if p != victim)
    assert pool.pids("drained") == {index: [pid] for index, pid in live.items()}


def test_readyz_waits_for_every_child(pools: Callable[..., Pool]) -> None:
    pool = pools("gated", workers=2)
    wait_until(lambda: len(pool.pids()) == 2, timeout=DEADLINE_S, what="both workers started")
    wait_until(lambda: pool.get("/healthz")[0] == 200, timeout=DEADLINE_S, what="server up")
    assert pool.get("/readyz")[0] == 503
    (pool.workdir / "go-0").touch()
    wait_until(
        lambda: 'kubenetmon_pool_ready_workers{pool="test"} 1.0' in pool.get("/metrics")[1],
        timeout=DEADLINE_S,
        what="one ready",
    )
    assert pool.get("/readyz")[0] == 503
    (pool.workdir / "go-1").touch()
    wait_until(lambda: pool.get("/readyz")[0] == 200, timeout=DEADLINE_S, what="both ready")
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.wait_exit() == 0


def test_crash_loop_exits_non_zero(pools: Callable[..., Pool]) -> None:
    pool = pools("crashing", workers=1, max_crashes=3)
    assert pool.wait_exit() == 1
    assert len(pool.pids()[0]) == 3
    assert "giving up" in pool.log.read_text()


def test_second_sigterm_exits_at_once(pools: Callable[..., Pool]) -> None:
    pool = pools("stubborn", workers=2)
    wait_until(lambda: pool.get("/readyz")[0] == 200, timeout=DEADLINE_S, what="ready")
    workers = [pids[0] for pids in pool.pids().values()]
    pool.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: len(pool.pids("draining")) == 2, timeout=DEADLINE_S, what="workers draining")
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.wait_exit() == 128 + signal.SIGTERM
    wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=DEADLINE_S, what="workers gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its (dead) parent's reaper is gone
        return stat.read().split(") ", 1)[1][0] != "Z"
