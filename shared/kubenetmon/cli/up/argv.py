"""The command line of every process ``kubenetmon up`` runs: the same commands a cluster would run.

Pure: settings in, argument lists out. Every role gets its settings as flags (the children's
environment carries no ``KUBENETMON_*`` variables), their HTTP servers are off (nothing to scrape on a
laptop, no port to collide), and their shutdown budgets fit inside ``up``'s own.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.cli.up.children import kubenetmon_command
from kubenetmon.cli.up.settings import UpSettings
from kubenetmon.shared.options import format_duration

AGENT_DRAIN: Final = "15s"
SERVICE_DRAIN: Final = "20s"
INTERACTIVE_REFRESH_S: Final = 2.0


def writer(settings: UpSettings, *, nats_url: str) -> list[str]:
    """Owns ``DIR/clickhouse``: migrates it at start and serves ``top``/``sql`` while it runs."""
    return kubenetmon_command(
        "writer",
        "--clickhouse-dsn", f"chdb://{settings.clickhouse_dir}",
        "--nats-url", nats_url,
        "--batch-age", "1s",
        "--http-port", "-1",
        "--drain-timeout", SERVICE_DRAIN,
    )  # fmt: skip


def enricher(
    settings: UpSettings, *, nats_url: str, inventory: str, kubeconfig: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """``extra`` (labeling flags that come with the metadata) follows, and so wins over, ``up``'s own."""
    return kubenetmon_command(
        "enricher",
        "--nats-url", nats_url,
        *labelling(settings, inventory=inventory, kubeconfig=kubeconfig, extra=extra),
        "--http-port", "-1",
        "--drain-timeout", SERVICE_DRAIN,
    )  # fmt: skip


def labelling(
    settings: UpSettings, *, inventory: str, kubeconfig: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """The enricher's labelling flags (metadata, cloud, region, ranges) and the agents' interval (its
    plausibility check: reports start at multiples of it), recorded for ``replay raw``."""
    metadata = ["--inventory", inventory] if inventory else ["--kubeconfig", kubeconfig] if kubeconfig else []
    labels = [] if "--cloud" in extra else ["--cloud", settings.cloud]  # the metadata's own wins
    labels += ["--region", settings.region] if settings.region and "--region" not in extra else []
    ranges = ["--ranges", ",".join(settings.ranges), "--ranges-cache-dir", str(settings.root / "ranges")]
    interval = ["--interval", f"{settings.interval}s"]
    return [*metadata, *labels, *(ranges if settings.ranges else []), *interval, *extra]


def agent(settings: UpSettings, *, nats_url: str, node: str, netns: str) -> list[str]:
    return kubenetmon_command(
        "agent",
        "--nats-url", nats_url,
        "--node-name", node,
        *(["--netns", netns] if netns else []),
        "--interval", f"{settings.interval}s",
        "--poll-interval", format_duration(settings.poll_s),
        "--state-dir", str(settings.agent_dir(node)),
        "--metrics-port", "-1",
        "--drain-timeout", AGENT_DRAIN,
    )  # fmt: skip


def view(settings: UpSettings, *, interactive: bool) -> list[str]:
    """``top --watch`` through the writer only (it must never open the directory the writer owns)."""
    refresh = settings.refresh_s or (INTERACTIVE_REFRESH_S if interactive else settings.interval_s)
    return kubenetmon_command(
        "top",
        "--data-dir", settings.data_dir,
        "--owner-only",
        "--watch", format_duration(refresh),
        "--since", format_duration(settings.since_s),
        "--by", settings.by,
    )  # fmt: skip


def final_report(settings: UpSettings) -> list[str]:
    """One ``top`` after everything stopped (it then opens the directory itself)."""
    since = format_duration(settings.since_s)
    return kubenetmon_command("top", "--data-dir", settings.data_dir, "--since", since, "--by", settings.by)
