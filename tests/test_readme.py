"""The README's promises that code can check: its configuration reference and its commands."""

from __future__ import annotations

from pathlib import Path

from kubenetmon.cli import reference

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_matches_the_parsers() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    assert reference.section() in text, (
        "docs/reference.md is stale: run `python -m kubenetmon.cli.reference --write docs/reference.md`"
    )


def test_readme_links_the_reference_instead_of_holding_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/reference.md)" in readme
    assert reference.BEGIN not in readme and "| `--nats-url` |" not in readme


def test_write_given_the_readme_rewrites_the_reference_beside_it(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# readme\n")
    stale = f"# head\n\n{reference.BEGIN}\nold\n{reference.END}\ntail\n"
    (tmp_path / "docs" / "reference.md").write_text(stale)
    assert reference.main(["--write", str(tmp_path / "README.md")]) == 0
    assert (tmp_path / "README.md").read_text() == "# readme\n"
    assert (tmp_path / "docs" / "reference.md").read_text() == f"# head\n\n{reference.section()}\ntail\n"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/setup && .venv/bin/pytest -q" in readme
    assert "\n.venv/bin/pytest -q\n" in ci and "bash .ci/setup" in ci
