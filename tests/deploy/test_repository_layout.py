"""The repository's top level is fixed: the three components, the shared package, the manifests, the tests,
the compose file and the project files. Build tooling goes into ``.ci/``, further compose files and other
documentation into ``docs/``, benchmarks into ``bench/``. Read from the tracked files (``git ls-files``),
so a stray file that is not committed does not count.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = {
    "agent",
    "enricher",
    "writer",
    "shared",
    "k8s",
    "tests",
    "compose.yaml",
    "pyproject.toml",
    "README.md",
    "Dockerfile",
    "bench",
    "docs",
}


def tracked_paths() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [path for path in out.decode().split("\0") if path]


def test_top_level_entries_are_the_fixed_set() -> None:
    paths = tracked_paths()
    entries = {path.split("/", 1)[0] for path in paths}
    plain = {e for e in entries if not e.startswith(".")}
    assert (plain - TOP_LEVEL, TOP_LEVEL - plain) == (set(), set()), "(not allowed, missing)"
    # besides .ci/, only dotfiles (.gitignore, .dockerignore, ...), no further dot directories
    dot_directories = {path.split("/", 1)[0] for path in paths if path.startswith(".") and "/" in path}
    assert dot_directories == {".ci"}
