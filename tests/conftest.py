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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep an ``xdist_group`` on one worker under pytest 9. pytest-xdist 3.8 groups a test by adding
    ``@<group>`` to its node id through ``item._nodeid``, which pytest 9 no longer reads (the id lives
    in ``item._id``), so every group was spread over the workers. This adds the suffix where pytest 9
    keeps the id; it does nothing outside a ``--dist loadgroup`` worker, or when the id has it already."""
    if not getattr(config.option, "loadgroup", False) or not hasattr(config, "workerinput"):
        return
    from _pytest.nodeid import NodeId  # the only way to rename an item under pytest 9

    for item in items:
        groups = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if groups and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")  # type: ignore[attr-defined]


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
