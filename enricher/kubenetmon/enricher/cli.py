"""``kubenetmon enricher``: a supervisor and W enricher processes sharing the durable ``enricher`` consumer.

This module parses and wires: flags and ``KUBENETMON_*`` variables become one ``EnricherConfig``,
checked here, in the supervisor, so a bad flag or an unreadable file fails before any spawn; then the
pool runs ``service.work`` in each worker process. It must not do a worker's job: that is ``service``'s.
"""

from __future__ import annotations

import argparse

from kubenetmon.enricher.service import EnricherConfig
from kubenetmon.enricher.settings import (
    add_enricher_arguments,
    add_history_arguments,
    add_label_arguments,
    add_source_arguments,
    enricher_options,
    history_options,
    label_options,
    source_options,
)
from kubenetmon.shared import logs
from kubenetmon.shared.broker import preflight
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.options import require_readable
from kubenetmon.shared.pool import supervise_role
from kubenetmon.shared.settings import (
    add_http_arguments,
    add_log_arguments,
    add_nats_arguments,
    add_pool_arguments,
    add_runtime_arguments,
    http_settings,
    log_settings,
    nats_settings,
    pool_settings,
    runtime_settings,
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_label_arguments(parser)
    add_enricher_arguments(parser)
    add_source_arguments(parser)
    add_history_arguments(parser)
    add_nats_arguments(parser)
    add_pool_arguments(parser)
    add_runtime_arguments(parser)
    add_http_arguments(parser)
    add_log_arguments(parser)


def config_from(args: argparse.Namespace) -> EnricherConfig:
    config = EnricherConfig(
        nats=nats_settings(args),
        label=label_options(args),
        enricher=enricher_options(args),
        history=history_options(args),
        source=source_options(args),
        runtime=runtime_settings(args),
        http=http_settings(args),
    )
    config.label.label()  # validate now, in the supervisor, so a bad flag fails before any spawn
    preflight(config.nats)
    if config.source.metadata_source == "meta" and config.label.inventory:
        raise ConfigError("--inventory and --metadata-source meta exclude each other: choose one source")
    files = [("--inventory", config.label.inventory), ("--kubeconfig", config.enricher.kubeconfig)]
    files += [("--custom-ranges", path) for path in config.label.custom_ranges]
    require_readable(files)
    return config


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    logs.setup(log_settings(args), process="enricher")
    return supervise_role(
        "kubenetmon.enricher.service:work",
        config=config,
        pool=pool_settings(args),
        logs=log_settings(args),
        name="enricher",
    )
