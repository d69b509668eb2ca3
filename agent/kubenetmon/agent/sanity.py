"""The start-up sanity check: refuse to meter a table whose entries carry no counters.

Without ``net.netfilter.nf_conntrack_acct=1`` conntrack entries have no byte or packet counters and the
agent would report nothing while looking healthy, so it refuses to start with a message that says how to
fix it. A node that just booted may still be applying its sysctls: while the node is younger than
``young_node_s`` the agent waits for accounting instead of refusing. ``--skip-sanity-check`` skips it.

It also warns when DESTROY events are off or limited (``nf_conntrack_events``): bytes of flows that close
between two polls are then not seen.

And it turns on ``nf_conntrack_timestamp`` when it is off: a conntrack's creation time is what tells a
new flow from an earlier one that had the same tuples and the same reused kernel object (hence the same
conntrack id); without it, under heavy churn, whole short flows can be taken for stale repeats and lost.
That sysctl is the only thing this module changes (with ``write``); it adds 16 bytes to new conntracks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from kubenetmon.shared.errors import ConfigError

log = logging.getLogger(__name__)

ACCT: Final = "net/netfilter/nf_conntrack_acct"
EVENTS: Final = "net/netfilter/nf_conntrack_events"
TIMESTAMP: Final = "net/netfilter/nf_conntrack_timestamp"

ACCOUNTING_OFF: Final = (
    "conntrack accounting is off (net.netfilter.nf_conntrack_acct = {value}{where}): conntrack entries "
    "carry no byte or packet counters, so there is nothing to meter. Enable it {on} with "
    "`{fix}` (and persist it), then restart the agent; or pass --skip-sanity-check to start anyway."
)
SKIPPED_ACCOUNTING_OFF: Final = (
    "--skip-sanity-check: conntrack accounting is off (net.netfilter.nf_conntrack_acct = %s%s): entries "
    "carry no byte or packet counters, so this agent reports flows with zero bytes; enable it with `%s`"
)


def enable_accounting(netns: str) -> tuple[str, str]:
    """Where and how to turn accounting on: the node's sysctl, or the one of namespace ``netns``."""
    command = "sysctl -w net.netfilter.nf_conntrack_acct=1"
    if netns:
        return f"in the namespace {netns}", f"ip netns exec {netns} {command}"
    return "on the node", command


def off_message(value: str, *, netns: str) -> str:
    """The refusal for accounting off, with the fix that applies where the agent meters."""
    on, fix = enable_accounting(netns)
    where = f" in network namespace {netns}" if netns else ""
    return ACCOUNTING_OFF.format(value=value, where=where, on=on, fix=fix)


def warn_if_skipped_and_off(read: Callable[[str], str], *, netns: str = "") -> None:
    """``--skip-sanity-check``: start anyway, but say so when there are no counters to meter."""
    value = read(ACCT)
    if value not in ("1", ""):
        where = f" in network namespace {netns}" if netns else ""
        log.warning(SKIPPED_ACCOUNTING_OFF, value, where, enable_accounting(netns)[1])


NO_CONNTRACK: Final = (
    "conntrack is not available{where} (no net.netfilter.nf_conntrack_acct): is the nf_conntrack module "
    "loaded and is the agent in the node's network namespace (host network)?"
)


def uptime() -> float:
    """Seconds since the node booted."""
    return float(Path("/proc/uptime").read_text().split()[0])


def check(
    read: Callable[[str], str],
    *,
    netns: str = "",
    young_node_s: float,
    node_uptime: Callable[[], float] = uptime,
    sleep: Callable[[float], None] = time.sleep,
    write: Callable[[str, str], None] | None = None,
) -> None:
    """Return when accounting is on; wait while the node is young; otherwise raise ``ConfigError``.

    ``read(path)`` returns a sysctl (``/proc/sys/<path>``) of the namespace being metered; ``write(path,
    value)``, if given, sets one (used to turn creation timestamps on).
    """
    where = f" in network namespace {netns}" if netns else ""
    value = read(ACCT)
    if value == "":
        raise ConfigError(NO_CONNTRACK.format(where=where))
    while value != "1":
        age = node_uptime()
        if age >= young_node_s:
            raise ConfigError(off_message(value, netns=netns))
        log.warning(
            "net.netfilter.nf_conntrack_acct is %s%s; the node booted %.0fs ago, waiting up to %.0fs for it",
            value,
            where,
            age,
            young_node_s - age,
        )
        sleep(min(5.0, max(young_node_s - age, 0.1)))
        value = read(ACCT)
    warn_about_events(read(EVENTS), where=where)
    ensure_timestamps(read, write, where=where)


def ensure_timestamps(
    read: Callable[[str], str], write: Callable[[str, str], None] | None, *, where: str = ""
) -> None:
    """Turn ``nf_conntrack_timestamp`` on if it is off; warn if that is not possible."""
    if read(TIMESTAMP) != "0":
        return
    if write is not None:
        try:
            write(TIMESTAMP, "1")
        except OSError as exc:
            log.warning("cannot turn on net.netfilter.nf_conntrack_timestamp%s: %s", where, exc)
        else:
            log.info("turned on net.netfilter.nf_conntrack_timestamp%s (conntrack creation times)", where)
            return
    log.warning(
        "net.netfilter.nf_conntrack_timestamp = 0%s: a new flow that reuses a closed flow's tuples and "
        "kernel object within seconds cannot be told apart from it and may be missed; set it to 1",
        where,
    )


def warn_about_events(value: str, *, where: str = "") -> None:
    if value == "0":
        log.warning(
            "conntrack events are off (net.netfilter.nf_conntrack_events = 0%s): bytes a flow moves after "
            "the last poll before it closes are not reported; set it to 1",
            where,
        )
    elif value == "2":
        log.warning(
            "net.netfilter.nf_conntrack_events = 2%s: flows created before the agent subscribed send no "
            "DESTROY event, so their last bytes before closing are missed; set it to 1",
            where,
        )
