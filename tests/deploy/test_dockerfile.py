"""The Dockerfile, read structurally (no container engine in CI): a multi-stage build whose final stage
is a slim Python with the virtualenv only, non-root, labelled; and the build context is an allow-list.
It is portable: no ``# syntax=`` frontend, no heredocs, so every builder reads it as it is. The dependency
list the build installs is computed by the build's own script, run here. The ``docker`` suite
(tests/deploy/test_docker_e2e.py) builds it for real, with BuildKit and with the classic builder.
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
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
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
        keyword, _, args = line.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    text = (ROOT / "Dockerfile").read_text()
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


PORTABLE_INSTRUCTIONS = {"ARG", "FROM", "ENV", "WORKDIR", "RUN", "COPY", "LABEL", "USER", "ENTRYPOINT", "CMD"}


def test_portable_to_every_builder() -> None:
    """No frontend to fetch (``# syntax=``), no heredocs, no BuildKit-only flags: the classic builder,
    BuildKit's built-in frontend, buildah/podman and kaniko read it as it is."""
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*(syntax|escape|check)\s*=", text, re.M | re.I), "no parser directives"
    for keyword, args in instructions(text):
        assert keyword in {
            "ARG",
            "FROM",
            "ENV",
            "WORKDIR",
            "RUN",
            "COPY",
            "LABEL",
            "USER",
            "ENTRYPOINT",
            "CMD",
        }
        assert "<<" not in args, f"heredoc in {keyword}"
        assert not re.search(r"--(mount|network|security|chmod|link|parents|exclude|checksum)\b", args), args
        if keyword in ("RUN", "COPY"):
            assert "http://" not in args and "https://" not in args and "curl" not in args, (
                "nothing but packages is fetched at build time"
            )


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
    sources = {p for c in stages[0].all("COPY") for p in c.split()[:-1]}
    assert ".ci/image_requirements.py" in sources
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "the context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "shared",
        "agent",
        "enricher",
        "writer",
        ".ci/image_requirements.py",
    }


@pytest.mark.parametrize("with_chdb", ["false", "true"])
def test_requirements_script_follows_pyproject(
    dockerfile: tuple[dict[str, str], list[Stage]], with_chdb: str, tmp_path: Path
) -> None:
    _, stages = dockerfile
    (script,) = [r for r in stages[0].all("RUN") if r.startswith("python image_requirements.py")]
    assert script == "python image_requirements.py > /tmp/requirements.txt"
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "image_requirements.py")],
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
