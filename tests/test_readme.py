"""The README's promises that code can check: its configuration reference and its commands."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.cli import reference

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_matches_the_parsers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference.section() in readme, (
        "README configuration reference is stale: run `python -m kubenetmon.cli.reference --write README.md`"
    )


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/setup && .venv/bin/pytest -q" in readme
    assert "\n.venv/bin/pytest -q\n" in ci and "bash .ci/setup" in ci
