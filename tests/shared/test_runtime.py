"""The process edge: signals, drain deadline, root tasks, JSON logs, the metrics/health server."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kubenetmon.shared import logs, metrics
from kubenetmon.shared.settings import HttpSettings, LogSettings
from tests.support import http

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0


class Proc:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.shared.runtime_targets", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()  # blocks until the child says it (or exits: "")
        assert got == line, f"expected {line!r}, got {got!r}; stderr: {self.stderr()}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=DEADLINE_S)
        return self.proc.returncode, out, err

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_drains_and_exits_with_mains_code(sig: signal.Signals) -> None:
    p = Proc("drains")
    p.expect("ready")
    p.signal(sig)
    code, out, err = p.finish()
    assert (code, out) == (0, "drained\n")
    assert f"{sig.name} received: draining" in err


def test_drain_deadline_cancels_and_exits_non_zero() -> None:
    p = Proc("stuck", "0.3")
    p.expect("ready")
    p.signal(signal.SIGTERM)
    code, out, err = p.finish()
    assert code == 1
    assert out == "draining forever\ncancelled\n"
    assert "drain did not finish within 0.3s" in err


def test_second_signal_exits_at_once() -> None:
    p = Proc("stuck", "600")
    p.expect("ready")
    p.signal(signal.SIGTERM)
    p.expect("draining forever")
    p.signal(signal.SIGTERM)
    code, out, err = p.finish()
    assert code == 128 + signal.SIGTERM
    assert "cancelled" not in out
    assert "second SIGTERM: exiting now" in err


def test_failed_root_task_stops_the_others_and_is_logged_at_once() -> None:
    code, out, err = Proc("failing_task").finish()
    assert code == 1
    assert out == "good task stopped\nfailed: ['bad']\n"
    record = next(json.loads(line) for line in err.splitlines() if "task bad failed" in line)
    assert record["level"] == "error" and "RuntimeError: boom" in record["exc"]


def test_critical_task_ending_early_is_a_failure() -> None:
    code, out, err = Proc("task_ends_early").finish()
    assert code == 1
    assert out == "failed: ['quits']\n"
    assert "task quits ended while the process was not stopping" in err


def test_main_return_value_is_the_exit_code() -> None:
    assert Proc("returns_code").finish()[0] == 7


def test_json_log_lines_carry_extra_fields() -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="json", level="debug"), process="writer-1", stream=out)
    try:
        logging.getLogger("kubenetmon.test").info("batch %d", 3, extra={"rows": 1000, "seconds": 0.5})
    finally:
        logs.setup(LogSettings(format="text", level="warning"))
    record = json.loads(out.getvalue())
    assert record["msg"] == "batch 3"
    assert (record["rows"], record["seconds"], record["process"], record["level"]) == (
        1000,
        0.5,
        "writer-1",
        "info",
    )
    assert record["ts"].endswith("Z")


def test_http_server_serves_probes_and_metrics() -> None:
    state = {"healthy": True, "ready": False}
    hits = metrics.counter("test_http_hits_total", "hits", ["kind"])
    hits.labels("a").inc(3)
    server = metrics.serve(
        HttpSettings(host="127.0.0.1", port=0), healthy=lambda: state["healthy"], ready=lambda: state["ready"]
    )
    assert server is not None
    try:

        def get(path: str) -> tuple[int, str]:
            return http.get(server.port, path, timeout=5)

        assert get("/healthz")[0] == 200
        assert get("/readyz")[0] == 503
        state["ready"] = True
        assert get("/readyz")[0] == 200
        state["healthy"] = False
        assert get("/healthz")[0] == 503
        status, text = get("/metrics")
        assert status == 200 and 'kubenetmon_test_http_hits_total{kind="a"} 3.0' in text
        assert get("/nope")[0] == 404
    finally:
        server.close()
    assert metrics.serve(HttpSettings(port=-1), healthy=lambda: True, ready=lambda: True) is None
