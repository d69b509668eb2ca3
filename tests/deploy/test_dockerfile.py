"""The Dockerfile, read structurally (no container engine in CI): a multi-stage build whose final stage
is a slim Python with the virtualenv only, non-root, labelled; and the build context is an allow-list.
The dependency list the build installs is computed by the Dockerfile's own script, run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = (
    "gcc",
    "g++",
    "build-essential",
    "make",
    "cmake",
    "clang",
    "python3-dev",
    "libc6-dev",
    "hatchling",
)


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped, heredocs kept whole."""
    lines = text.splitlines()
    result: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc and line.split(None, 1)[0].upper() in ("RUN", "COPY"):
            body = []
            while i < len(lines) and lines[i] != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            line += "\n" + "\n".join(body)
        keyword, _, args = line.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1"), "heredocs need the Dockerfile 1.4+ frontend"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(base=parts[0], name=parts[2] if len(parts) > 2 else str(len(stages))))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            key, _, value = args.partition("=")
            global_args[key] = value
    return global_args, stages


def test_multi_stage_on_slim_python_311(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2
    assert {s.base for s in stages} == {"${PYTHON_IMAGE}"}, (
        "every stage on the same base (the venv is copied)"
    )
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", global_args["PYTHON_IMAGE"])
    assert "--platform" not in " ".join(s.base for s in stages), (
        "each platform builds natively (wheels match)"
    )


def test_build_compiles_nothing(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    for stage in stages:
        for run in stage.all("RUN"):
            assert "apt-get" not in run and "apk " not in run, "no compiler is installed in any stage"
    installs = [r for r in stages[0].all("RUN") if "pip install" in r and "-r " in r]
    assert installs and all("--prefer-binary" in r for r in installs), "wheels wherever they exist"


def test_final_stage_is_the_virtualenv_only_non_root(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    copies = final.all("COPY")
    assert copies == [f"--from={stages[0].name} /opt/kubenetmon /opt/kubenetmon"]
    for run in final.all("RUN"):
        assert "apt-get install" not in run and "pip " not in run, run
        assert not any(re.search(rf"\b{re.escape(tool)}\b", run) for tool in BUILD_TOOLS), run
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "numeric non-root user (runAsNonRoot can verify it)"
    assert final.all("ENTRYPOINT") == ['["kubenetmon"]']
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "read-only root filesystem at run time"


def test_oci_labels(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    labels = " ".join(stages[-1].all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_build_copies_only_what_the_wheel_needs(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    copied = {c.split()[0] for c in stages[0].all("COPY")}
    assert copied == {"pyproject.toml", "shared", "agent", "enricher", "writer"}
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "the context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "shared", "agent", "enricher", "writer"}


@pytest.mark.parametrize("with_chdb", ["false", "true"])
def test_requirements_script_follows_pyproject(
    dockerfile: tuple[dict[str, str], list[Stage]], with_chdb: str, tmp_path: Path
) -> None:
    _, stages = dockerfile
    (script,) = [r for r in stages[0].all("RUN") if r.startswith("python - <<")]
    body = script.split("\n", 1)[1]
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run(
        [sys.executable, "-c", body],
        cwd=tmp_path,
        env={**os.environ, "WITH_CHDB": with_chdb},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if with_chdb == "true":
        assert out == deps
    else:
        assert not any(d.startswith("chdb") or "[chdb]" in d for d in out)
        assert len(out) == len(deps) - sum(d.startswith("chdb") for d in deps)
    assert all("==" in d for d in out), "pinned"
