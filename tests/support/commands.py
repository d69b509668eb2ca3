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
