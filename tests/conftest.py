"""Fixture plugins, one module per real component (each owned by the part of the code that needs it); and the
fault suite's table at the end of the session, gathered from the reports (with parallel workers, only the
main pytest process prints, and it never imports the test modules' state)."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.nats_cluster",
    "tests.fixtures.clickhouse",
    "tests.fixtures.lab",
    "tests.fixtures.kube",
    "tests.fixtures.processes",
]

_FAULT_RESULTS: list[Any] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FAULT_RESULTS.extend(value for key, value in report.user_properties if key == "fault_result")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FAULT_RESULTS:
        return
    from tests.faults.test_faults import summary_lines

    terminalreporter.section("fault suite: bytes counted by the kernel vs stored")
    for line in summary_lines([tuple(result) for result in _FAULT_RESULTS]):
        terminalreporter.write_line(line)
