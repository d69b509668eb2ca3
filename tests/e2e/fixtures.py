"""Fixtures of the end-to-end and fault tests: the cluster, and a factory of running pipelines.

``make_pipeline(options)`` builds the pipeline around the test's ``cluster`` with a nats-server of its
own (stoppable), starts it and returns it once every role is ready. At teardown every process is killed
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

MakePipeline = Callable[..., Pipeline]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def cluster(lab: Lab) -> Cluster:
    return build(lab)


@pytest.fixture
def make_pipeline(
    cluster: Cluster,
    make_nats_server: Callable[..., NatsServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[MakePipeline]:
    made: list[Pipeline] = []

    def make(options: Options | None = None) -> Pipeline:
        server = make_nats_server()
        workdir = tmp_path / f"pipeline-{len(made)}"
        workdir.mkdir()
        settings = nats_settings_for(server)
        pipeline = Pipeline(
            cluster, workdir=workdir, nats=server, settings=settings, options=options or Options()
        )
        made.append(pipeline)
        return pipeline.start()

    yield make
    reports = [getattr(request.node, f"report_{when}", None) for when in ("setup", "call")]
    failed = any(report is not None and report.failed for report in reports)
    for pipeline in made:
        if failed:
            print(f"\n===== logs of the pipeline in {pipeline.workdir}\n{pipeline.logs()}")
        pipeline.teardown()
