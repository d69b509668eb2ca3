"""The fault suite runs on the end-to-end harness (the same fixtures); its table is printed at the end of the
session by tests/conftest.py (the one conftest the pytest process that prints it always loads)."""

from __future__ import annotations

from tests.e2e.fixtures import cluster, make_pipeline, pytest_runtest_makereport

__all__ = ["cluster", "make_pipeline", "pytest_runtest_makereport"]
