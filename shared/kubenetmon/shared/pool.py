"""A supervisor and W spawned worker processes, as the enricher and writer pods run.

``supervise("pkg.module:function", settings=..., pool=..., ...)`` spawns ``pool.workers`` children (spawn
context: a fresh interpreter each, nothing inherited by fork) and then only watches them:

- SIGTERM/SIGINT: forwarded to every child as SIGTERM; each drains and exits; the supervisor exits 0 if all
  exited 0 within the drain deadline (stragglers are SIGKILLed, exit 1). A second signal: exit at once.
- A child that dies unasked is respawned after a backoff that doubles per recent crash of that slot;
  ``pool.max_crashes`` crashes within ``pool.crash_window_s`` make the supervisor stop everything and exit
  1, so Kubernetes sees CrashLoopBackOff instead of a pod that quietly limps. A child that exits with
  ``EXIT_CONFIG`` (a ``ConfigError``, e.g. credentials the server refused) stops the pool at once: exit 2.
- One HTTP port: ``/healthz`` (fails once giving up), ``/readyz`` (only when every child said ready),
  ``/metrics`` (all children's Prometheus samples, multiprocess mode, plus the supervisor's own).

A child target is ``def work(settings, ready: Ready) -> int`` that calls ``runtime.run``; it calls
``ready()`` once it can do its job (``ready(False)`` if it no longer can). A role whose config carries its
``runtime`` and ``http`` settings (``WorkerConfig``) wires both ends in one line each: ``supervise_role``
in its ``main``, ``run_worker(serve, config, ready)`` as its ``work``. Children start with SIGTERM and
SIGINT blocked; ``runtime.run`` unblocks them once its handlers are in place, so an early SIGTERM is
never lost. Children live in their own process group (a terminal's Ctrl-C reaches only the supervisor,
which forwards one SIGTERM) and get SIGTERM if the supervisor dies.

This module must not know any service: the target is a string, the settings an opaque picklable object.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from multiprocessing import connection
from typing import Any, Final, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kubenetmon.shared import backoff, exits
from kubenetmon.shared.pool_child import EXIT_CONFIG, Ready, child_main
from kubenetmon.shared.runtime import run as run_process
from kubenetmon.shared.settings import HttpSettings, LogSettings, PoolSettings, RuntimeSettings

log = logging.getLogger(__name__)

SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
EXIT_GAVE_UP: Final = exits.FAILED
_KILL_GRACE_S: Final = 5.0
__all__ = ["Ready", "Supervisor", "WorkerConfig", "run_worker", "supervise", "supervise_role"]


class WorkerConfig(Protocol):
    """A role's worker config, as far as the pool is concerned (a frozen dataclass with these fields)."""

    @property
    def runtime(self) -> RuntimeSettings: ...

    @property
    def http(self) -> HttpSettings: ...


C = TypeVar("C", bound=WorkerConfig)
C_contra = TypeVar("C_contra", bound=WorkerConfig, contravariant=True)


class Serve(Protocol[C_contra]):
    """A worker process's main coroutine: runs until ``stop`` (and a drain); returns the exit code."""

    def __call__(self, config: C_contra, /, *, ready: Ready, stop: asyncio.Event) -> Awaitable[int]: ...


def supervise(
    target: str,
    *,
    settings: object,
    pool: PoolSettings,
    runtime: RuntimeSettings,
    http: HttpSettings,
    logs: LogSettings,
    name: str,
) -> int:
    """Run the pool until a signal or a crash loop; returns the process exit code."""
    resolve(target)  # fail fast, in the supervisor, on a wrong target
    return Supervisor(target, settings, pool=pool, runtime=runtime, http=http, logs=logs, name=name).run()


def supervise_role(
    target: str, *, config: WorkerConfig, pool: PoolSettings, logs: LogSettings, name: str
) -> int:
    """``supervise`` a role's workers with the runtime and HTTP settings its ``config`` carries."""
    return supervise(
        target, settings=config, pool=pool, runtime=config.runtime, http=config.http, logs=logs, name=name
    )


def run_worker(serve: Serve[C], config: C, ready: Ready) -> int:
    """A worker process (a pool's target): ``serve`` on the runtime, drained within the config's deadline."""
    return run_process(
        lambda stop: serve(config, ready=ready, stop=stop), drain_timeout_s=config.runtime.drain_timeout_s
    )


def resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"worker target {target!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), attr)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.crashes: deque[float] = deque()
        self.respawn_at: float | None = 0.0


class Supervisor:
    def __init__(
        self,
        target: str,
        settings: object,
        *,
        pool: PoolSettings,
        runtime: RuntimeSettings,
        http: HttpSettings,
        logs: LogSettings,
        name: str,
    ) -> None:
        self.target, self.settings, self.pool, self.runtime = target, settings, pool, runtime
        self.http, self.logs, self.name = http, logs, name
        self._ctx = multiprocessing.get_context("spawn")
        self._ready = self._ctx.RawArray("b", pool.workers)
        self._slots = [_Slot(i) for i in range(pool.workers)]
        self._crashes: deque[float] = deque()
        self._signals = 0
        self._stopping_since: float | None = None
        self.gave_up = False
        self.failed = False
        self.config_error = False
        """A worker exited with ``EXIT_CONFIG``: the pool stopped and exits with it too."""
        self.restarts = 0
        self.port: int | None = None
        """The HTTP port actually bound (useful with port 0)."""

    # probes, called from the HTTP thread: they only read state
    def healthy(self) -> bool:
        return not (self.gave_up or self.config_error)

    def ready(self) -> bool:
        return self._stopping_since is None and all(self._ready)

    def run(self) -> int:
        metrics_dir, owned = self._metrics_dir()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        server = None
        try:
            from kubenetmon.shared import metrics  # after PROMETHEUS_MULTIPROC_DIR is set

            collector = _PoolCollector(self)
            server = metrics.serve(
                self.http,
                healthy=self.healthy,
                ready=self.ready,
                multiprocess_dir=metrics_dir,
                extra=[collector],
            )
            self.port = server.port if server else None
            log.info("supervising %d %s workers", self.pool.workers, self.name, extra={"target": self.target})
            self._loop(wake_r, metrics_dir)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            if server:
                server.close()
            if owned:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        code = (
            EXIT_CONFIG if self.config_error else EXIT_GAVE_UP if self.gave_up or self.failed else exits.DONE
        )
        log.info("%s pool exiting with %d", self.name, code)
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1  # only flips state; the loop, woken by the wakeup fd, acts on it

    def _loop(self, wake_r: int, metrics_dir: str) -> None:
        handled = 0
        while True:
            now = time.monotonic()
            if self._signals > handled:
                handled = self._signals
                if handled >= 2:
                    self._exit_now()
                self._begin_stop("signal")
            self._reap(now, metrics_dir)
            alive = [s for s in self._slots if s.process is not None]
            if self._stopping_since is not None:
                if not alive:
                    return
                if now - self._stopping_since > self.runtime.drain_timeout_s + _KILL_GRACE_S:
                    self._kill(alive)
                    continue
            else:
                self._respawn_due(now)
            waits: list[Any] = [wake_r, *(s.process.sentinel for s in self._slots if s.process)]
            connection.wait(waits, timeout=self._next_deadline(now))
            _drain_pipe(wake_r)

    def _next_deadline(self, now: float) -> float:
        if self._stopping_since is not None:
            return max(0.01, self._stopping_since + self.runtime.drain_timeout_s + _KILL_GRACE_S - now)
        due = [s.respawn_at for s in self._slots if s.respawn_at is not None]
        return max(0.01, min(due) - now) if due else 60.0

    def _respawn_due(self, now: float) -> None:
        for slot in self._slots:
            if slot.process is None and slot.respawn_at is not None and slot.respawn_at <= now:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        self._ready[slot.index] = 0
        proc = self._ctx.Process(
            target=child_main,
            name=f"{self.name}-{slot.index}",
            args=(self.target, self.settings, slot.index, self._ready, self.logs, self.name, os.getpid()),
            daemon=False,
        )
        # Blocked here, the child inherits the block and lifts it once its handlers exist.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        slot.process, slot.respawn_at = proc, None
        log.info("started worker %s", proc.name, extra={"pid": proc.pid})

    def _reap(self, now: float, metrics_dir: str) -> None:
        for slot in self._slots:
            proc = slot.process
            if proc is None or proc.is_alive():
                continue
            proc.join()
            slot.process = None
            self._ready[slot.index] = 0
            _mark_dead(proc.pid, metrics_dir)
            if self._stopping_since is not None:
                if proc.exitcode != 0:
                    self.failed = True
                    log.warning("worker %s exited with %s while draining", proc.name, proc.exitcode)
                continue
            if proc.exitcode == EXIT_CONFIG:  # it said why; a respawn would only say it again
                self.config_error = True
                self._begin_stop(f"worker {proc.name} stopped on a configuration error")
                continue
            self._crashed(slot, proc.name, proc.exitcode, now)

    def _crashed(self, slot: _Slot, name: str, exitcode: int | None, now: float) -> None:
        window = self.pool.crash_window_s
        for times in (self._crashes, slot.crashes):
            times.append(now)
            while times and now - times[0] > window:
                times.popleft()
        if len(self._crashes) >= self.pool.max_crashes:
            log.error(
                "worker %s exited with %s: %d crashes within %.0fs, giving up",
                name,
                exitcode,
                len(self._crashes),
                window,
            )
            self.gave_up = True
            self._begin_stop("crash loop")
            return
        delay = backoff.exponential(
            len(slot.crashes) - 1, base_s=self.pool.respawn_backoff_s, max_s=self.pool.respawn_backoff_max_s
        )
        slot.respawn_at = now + delay
        self.restarts += 1
        log.error("worker %s exited with %s; respawning in %.1fs", name, exitcode, delay)

    def _begin_stop(self, why: str) -> None:
        if self._stopping_since is not None:
            return
        self._stopping_since = time.monotonic()
        log.info("stopping %s workers (%s)", self.name, why)
        for slot in self._slots:
            slot.respawn_at = None
            if slot.process is not None and slot.process.pid is not None:
                _signal(slot.process.pid, signal.SIGTERM)

    def _kill(self, alive: list[_Slot]) -> None:
        self.failed = True
        for slot in alive:
            if slot.process is not None and slot.process.pid is not None:
                log.error("worker %s did not drain in time: SIGKILL", slot.process.name)
                _signal(slot.process.pid, signal.SIGKILL)
                slot.process.join(_KILL_GRACE_S)

    def _exit_now(self) -> None:
        log.warning("second signal: exiting now")
        for slot in self._slots:
            if slot.process is not None and slot.process.pid is not None:
                _signal(slot.process.pid, signal.SIGKILL)
        logging.shutdown()
        os._exit(128 + signal.SIGTERM)

    def _metrics_dir(self) -> tuple[str, bool]:
        """The multiprocess directory, exported for the children; True if we own (and remove) it."""
        path, owned = self.pool.metrics_dir, False
        if not path:
            path, owned = tempfile.mkdtemp(prefix="kubenetmon-metrics-"), True
        os.makedirs(path, exist_ok=True)
        for leftover in os.listdir(path):  # samples of a previous run would be summed in
            if leftover.endswith(".db"):
                os.unlink(os.path.join(path, leftover))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        return path, owned


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _mark_dead(pid: int | None, metrics_dir: str) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


class _PoolCollector:
    """The supervisor's own samples, added to the children's aggregate at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        labels = ["pool"]
        workers = GaugeMetricFamily("kubenetmon_pool_workers", "Worker processes alive", labels=labels)
        workers.add_metric([sup.name], sum(1 for s in sup._slots if s.process is not None))
        ready = GaugeMetricFamily("kubenetmon_pool_ready_workers", "Worker processes ready", labels=labels)
        ready.add_metric([sup.name], sum(1 for flag in sup._ready if flag))
        restarts = CounterMetricFamily("kubenetmon_pool_restarts", "Crashed workers respawned", labels=labels)
        restarts.add_metric([sup.name], sup.restarts)
        yield from (workers, ready, restarts)
