"""The body of ``kubenetmon up``: check, plan, run the pipeline under the process edge, release.

It checks what it needs first (privileges, conntrack accounting, ports, the data directory) and says in
one line what to do when something is missing; then it decides what is metered with which metadata
(``make_plan``) and runs the pipeline until Ctrl-C or SIGTERM. Imported only when ``up`` runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Final

from kubenetmon.cli.up import hostinventory, preflight
from kubenetmon.cli.up.children import child_environment
from kubenetmon.cli.up.pipeline import AgentSpec, Plan, run
from kubenetmon.cli.up.settings import UpSettings, up_settings
from kubenetmon.shared import logs, runtime
from kubenetmon.shared.settings import LogSettings

log = logging.getLogger(__name__)

STOP_BUDGET_S: Final = 300.0
"""Longest orderly stop (each step has its own, shorter deadline); a second Ctrl-C exits at once."""


def main(args: argparse.Namespace) -> int:
    settings = up_settings(args, environ=os.environ)
    logs.setup(LogSettings(level="warning", format="text"), process="up")
    check(settings)
    lock = preflight.DataDirLock(settings.root)
    lock.acquire()
    try:
        plan = make_plan(settings, interactive=sys.stdout.isatty())
        return runtime.run(lambda stop: run(plan, say=sys.stderr, stop=stop), drain_timeout_s=STOP_BUDGET_S)
    finally:
        lock.release()


def check(settings: UpSettings) -> None:
    """Everything that would make a child fail at once, as one clear ``ConfigError``."""
    preflight.check_privileges(status=Path("/proc/self/status").read_text(), argv0=_argv0())
    preflight.check_nats_binary()
    preflight.check_port(settings.nats_port)
    preflight.check_files(inventory=settings.inventory, kubeconfig=settings.kubeconfig)
    if settings.demo:
        from kubenetmon.cli.lab import demo  # only a demo run needs the lab

        demo.check()
        return
    preflight.check_netns(settings.netns)
    netns = settings.netns
    preflight.check_accounting(lambda path: preflight.read_sysctl(path, netns=netns), netns=netns)


def make_plan(settings: UpSettings, *, interactive: bool) -> Plan:
    """Which namespaces are metered and which metadata the enricher gets."""
    env = child_environment(os.environ)
    base = Plan(settings=settings, env=env, interactive=interactive)
    if settings.demo:
        from kubenetmon.cli.lab import demo

        return replace(
            base, lab_command=tuple(demo.command(settings.root / "demo")), description="the demo lab"
        )
    agents = (AgentSpec(node=settings.node_name, netns=settings.netns),)
    where = f"node {settings.node_name}" + (
        f" (network namespace {settings.netns})" if settings.netns else ""
    )
    if settings.inventory or settings.kubeconfig:
        source = settings.inventory or settings.kubeconfig
        return replace(
            base,
            agents=agents,
            inventory=os.path.abspath(settings.inventory) if settings.inventory else "",
            kubeconfig=os.path.abspath(settings.kubeconfig) if settings.kubeconfig else "",
            description=f"{where}, metadata from {source}",
        )
    hostname = socket.gethostname()
    ips = hostinventory.addresses(netns=settings.netns)
    inventory = hostinventory.host_inventory(node=settings.node_name, hostname=hostname, ips=ips)
    settings.generated_inventory.write_text(hostinventory.dump(inventory))
    return replace(
        base,
        agents=agents,
        inventory=str(settings.generated_inventory),
        description=f"{where} as one pod, {hostinventory.NAMESPACE}/{hostname} ({len(ips)} addresses)",
    )


def _argv0() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "kubenetmon"
    return "kubenetmon" if name.endswith(".py") or name == "-m" else name
