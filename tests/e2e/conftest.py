"""The end-to-end tests' fixtures (shared with the fault suite)."""

from tests.e2e.fixtures import cluster, make_pipeline, pytest_runtest_makereport

__all__ = ["cluster", "make_pipeline", "pytest_runtest_makereport"]
