"""``kubenetmon metadata``: one watcher of the API server for any number of enrichers (2 replicas, one
holding a lease). This module parses the flags and starts the one process; what that process does is
``metadata_service``.
"""

from __future__ import annotations

import argparse

from kubenetmon.enricher.metadata_service import MetadataConfig
from kubenetmon.enricher.settings import add_metadata_arguments, metadata_options
from kubenetmon.shared import logs
from kubenetmon.shared.broker import preflight
from kubenetmon.shared.options import require_readable
from kubenetmon.shared.pool import supervise_role
from kubenetmon.shared.settings import (
    PoolSettings,
    add_http_arguments,
    add_log_arguments,
    add_nats_arguments,
    add_runtime_arguments,
    http_settings,
    log_settings,
    nats_settings,
    runtime_settings,
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_metadata_arguments(parser)
    add_nats_arguments(parser)
    add_runtime_arguments(parser)
    add_http_arguments(parser)
    add_log_arguments(parser)


def main(args: argparse.Namespace) -> int:
    config = MetadataConfig(
        nats=nats_settings(args),
        metadata=metadata_options(args),
        runtime=runtime_settings(args),
        http=http_settings(args),
    )
    preflight(config.nats)
    require_readable([("--kubeconfig", config.metadata.kubeconfig)])
    logs.setup(log_settings(args), process="metadata")
    return supervise_role(
        "kubenetmon.enricher.metadata_service:work",
        config=config,
        pool=PoolSettings(workers=1),
        logs=log_settings(args),
        name="metadata",
    )
