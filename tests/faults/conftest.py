"""The fault suite runs on the end-to-end harness (the same fixtures) and prints its table at the end."""

from __future__ import annotations

import sys
from typing import Any

from tests.e2e.fixtures import cluster, make_pipeline, pytest_runtest_makereport

__all__ = ["cluster", "make_pipeline", "pytest_runtest_makereport", "pytest_terminal_summary"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    suite = sys.modules.get("tests.faults.test_faults")
    lines = suite.summary_lines() if suite is not None else []
    if lines:
        terminalreporter.section("fault suite: bytes counted by the kernel vs stored")
        for line in lines:
            terminalreporter.write_line(line)
