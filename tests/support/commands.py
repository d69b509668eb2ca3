"""The ``kubenetmon`` command as the tests run it: its argv, an environment without ``KUBENETMON_*``
variables (so only the flags count), and the flags that reproduce a settings object."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from kubenetmon.shared.options import format_value

KUBENETMON = [sys.executable, "-m", "kubenetmon.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``KUBENETMON_*`` variables, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBENETMON_")} | extra


def kubenetmon(
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``kubenetmon ARGS`` to completion in a clean environment plus ``env``, output captured as text."""
    return subprocess.run(
        [*KUBENETMON, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**(env or {})),
        cwd=cwd,
    )


def flags(settings: object) -> list[str]:
    """Command-line flags reproducing ``settings`` (the fields that differ from their defaults)."""
    out: list[str] = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if "flag" in f.metadata and value != f.default:
            out += [f.metadata["flag"], format_value(f.metadata["kind"], value)]
    return out


def made_the_whole_topology(init: subprocess.CompletedProcess[str]) -> bool:
    """``nats init`` on a fresh broker left all 7 objects in place: "7 created", or, when it had to ask
    again (a cluster still settling), created or found each of them. A create that timed out on the
    client may have been done on the server, and the attempt after it then finds the object unchanged."""
    if "topology: 7 created" in init.stdout:
        return True
    summary = init.stdout.strip().splitlines()[-1] if init.stdout.strip() else ""
    counts: dict[str, int] = {}
    for part in summary.removeprefix("topology: ").split(", "):
        n, _, action = part.partition(" ")
        counts[action] = int(n) if n.isdigit() else -1
    whole = set(counts) <= {"created", "unchanged"} and sum(counts.values()) == 7
    return "asking again" in init.stderr and whole
