"""``kubenetmon auth``: nats-server's auth callout for node agents (a Deployment of 2 in Kubernetes).

This module parses the flags and starts the one process; what that process does is ``auth_service``.
"""

from __future__ import annotations

import argparse

from kubenetmon.enricher.auth_service import AuthConfig, load_issuer
from kubenetmon.enricher.settings import add_auth_arguments, auth_options
from kubenetmon.shared import logs
from kubenetmon.shared.broker import preflight
from kubenetmon.shared.errors import ConfigError
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
    add_auth_arguments(parser)
    add_nats_arguments(parser)
    add_runtime_arguments(parser)
    add_http_arguments(parser)
    add_log_arguments(parser)


def main(args: argparse.Namespace) -> int:
    config = AuthConfig(
        nats=nats_settings(args),
        auth=auth_options(args),
        runtime=runtime_settings(args),
        http=http_settings(args),
    )
    preflight(config.nats)
    if not config.auth.issuer_seed_file:
        raise ConfigError("--auth-issuer-seed-file (KUBENETMON_AUTH_ISSUER_SEED_FILE) is required")
    require_readable(
        [("--kubeconfig", config.auth.kubeconfig), ("--auth-issuer-seed-file", config.auth.issuer_seed_file)]
    )
    load_issuer(config.auth.issuer_seed_file)  # a bad seed is one line now, not a crash loop later
    logs.setup(log_settings(args), process="auth")
    return supervise_role(
        "kubenetmon.enricher.auth_service:work",
        config=config,
        pool=PoolSettings(workers=1),
        logs=log_settings(args),
        name="auth",
    )
