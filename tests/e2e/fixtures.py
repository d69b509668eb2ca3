"""Fixtures of the end-to-end and fault tests: the cluster, and a factory of running pipelines.

``make_pipeline(options)`` builds the pipeline around the test's ``cluster`` with a nats-server of its
own (stoppable), or a three-node JetStream cluster of its own with ``Options(broker="cluster")``, starts
it and returns it once every role is ready. ``BROKERS`` parametrizes a test on the broker: the single
server in the default run, the cluster under the ``slow`` marker. At teardown every process is killed
and, if the test failed, the tail of each role's log is printed. Imported by both test directories'
conftest (the report hook too, so a failing test's logs are shown).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, build
from tests.e2e.harness import Options, Pipeline
from tests.fixtures.lab import Lab
from tests.fixtures.nats import NatsServer, nats_settings_for
from tests.fixtures.nats_cluster import NatsCluster, cluster_settings

MakePipeline = Callable[..., Pipeline]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def cluster(lab: Lab) -> Cluster:
    return build(lab)


BROKERS = ("single", pytest.param("cluster", marks=pytest.mark.slow))
"""``@pytest.mark.parametrize("broker", BROKERS)``, then ``make_pipeline(Options(broker=broker))``."""


@pytest.fixture
def make_pipeline(
    cluster: Cluster,
    make_nats_server: Callable[..., NatsServer],
    make_nats_cluster: Callable[..., NatsCluster],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[MakePipeline]:
    made: list[Pipeline] = []

    def make(options: Options | None = None) -> Pipeline:
        options = options or Options()
        workdir = tmp_path / f"pipeline-{len(made)}"
        workdir.mkdir()
        nats: NatsServer | NatsCluster
        if options.broker == "cluster":
            nats = make_nats_cluster()
            settings = cluster_settings(nats)
        else:
            nats = make_nats_server()
            settings = nats_settings_for(nats)
        pipeline = Pipeline(cluster, workdir=workdir, nats=nats, settings=settings, options=options)
        made.append(pipeline)
        return pipeline.start()

    yield make
    reports = [getattr(request.node, f"report_{when}", None) for when in ("setup", "call")]
    failed = any(report is not None and report.failed for report in reports)
    for pipeline in made:
        if failed:
            print(f"\n===== logs of the pipeline in {pipeline.workdir}\n{pipeline.logs()}")
        pipeline.teardown()
