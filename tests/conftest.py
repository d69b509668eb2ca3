"""Fixture plugins, one module per real component (each owned by the part of the code that needs it)."""

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.nats_cluster",
    "tests.fixtures.clickhouse",
    "tests.fixtures.lab",
    "tests.fixtures.kube",
    "tests.fixtures.processes",
]
