"""The README's promises that code can check: its configuration reference and its commands."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from kubenetmon.cli import reference
from kubenetmon.shared import exits
from kubenetmon.writer.query import check, cost, top_report
from kubenetmon.writer.query import completeness as c

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


# -- sample outputs ---------------------------------------------------------------------------------
# Each sample in the README is what the command's own renderer prints for the numbers of a demo run
# (`kubenetmon up --demo`, then the command in another terminal), so a change to the output shows here.

START = 1_796_000_000 // 60 * 60  # an interval start of the sample run
NODES = ("node-a", "node-b")


def top_sample() -> str:
    talkers = [
        ("api", "frontend", "INTRA_VPC", "us-east-1b", "us-east-1a", True, 959_412, 75),
        ("db", "aws:s3", "INTRA_REGION", "us-east-1b", "", False, 548_230, 114),
        ("cache", "db", "INTRA_VPC", "us-east-1a", "us-east-1b", True, 131_077, 88),
        ("frontend", "api", "INTRA_VPC", "us-east-1a", "us-east-1b", True, 67_140, 115),
        ("api", "db", "INTRA_VPC", "us-east-1b", "us-east-1b", False, 51_906, 103),
        ("api", "203.0.113.10", "PUBLIC_INTERNET", "us-east-1b", "", False, 28_197, 92),
        ("db", "cache", "INTRA_VPC", "us-east-1b", "us-east-1a", True, 26_843, 90),
        ("frontend", "cache", "INTRA_VPC", "us-east-1a", "us-east-1a", False, 10_662, 29),
        ("cache", "2001:db8::10", "PUBLIC_INTERNET", "us-east-1a", "", False, 3_870, 29),
    ]
    rows = [top_report.Talker(*t) for t in talkers]
    report = top_report.Report(
        spec=top_report.TopSpec(),
        now=START + 40,
        rows=rows,
        window_start=START,
        window_end=START + 40,
        total_bytes=sum(t.bytes for t in rows),
        groups=len(rows),
        completeness="8 of 8 node-intervals complete",
    )
    out = io.StringIO()
    top_report.render(report, fmt="table", out=out)
    return out.getvalue()


def check_sample() -> str:
    step, first, judged, unsettled = 10, 30, 18, 12  # 10 min of 10 s intervals; `up` ran for 5 minutes
    verdicts = [
        c.Verdict(node, START + i * step, step, c.NOT_YET if i < first else c.COMPLETE)
        for node in NODES
        for i in range(first + judged)
    ]
    verdicts += [
        c.Verdict(node, START + i * step, step, c.NOT_SETTLED)
        for node in NODES
        for i in range(first + judged, first + judged + unsettled)
    ]
    verdicts.sort(key=lambda v: (v.node, v.start))
    spec = check.CheckSpec(START, START + 600, (), 6 * 3600, "v", settled=START + (first + judged) * step)
    out = io.StringIO()
    check.render(spec, step, verdicts, fmt="table", out=out)
    assert check.exit_code(verdicts) == 0
    return out.getvalue()


def cost_sample() -> str:
    rows = [
        ("cross-zone", 0.0000218, 1_171_326, 1_171_326, 0),
        ("internet", 0.0, 32_067, 0, 0),
        ("same-zone", 0.0, 62_568, 62_568, 0),
        ("intra-region", 0.0, 548_230, 0, 0),
    ]
    report = cost.CostReport(
        spec=cost.CostSpec(by="class"),
        rows=[dict(zip(cost.FIELDS, r, strict=True)) for r in rows],
        total_usd=0.0000218,
        groups=len(rows),
    )
    out = io.StringIO()
    cost.render(report, fmt="table", out=out)
    return out.getvalue()


def cost_section_sample() -> str:
    """The Cost section's month of a larger cluster, with unpriced bytes."""
    gb = 10**9
    rows = [
        ("cross-zone", 9.10, 489 * gb, 489 * gb, 0),
        ("internet", 5.40, 172 * gb, 0, 0),
        ("inter-region", 1.20, 64_400_000_000, 0, 0),
        ("intra-region", 0.0, 966 * gb, 0, 0),
        ("unpriced UNKNOWN", 0.0, 3_220_000_000, 0, 3_220_000_000),
    ]
    report = cost.CostReport(
        spec=cost.CostSpec(by="class"),
        rows=[dict(zip(cost.FIELDS, r, strict=True)) for r in rows],
        total_usd=15.70,
        unpriced_bytes=3_220_000_000,
        groups=len(rows),
    )
    out = io.StringIO()
    cost.render(report, fmt="table", out=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("command", "sample"),
    [("kubenetmon top", top_sample), ("kubenetmon check --from -10m", check_sample),
     ("kubenetmon cost --by class", cost_sample), ("kubenetmon cost --by class", cost_section_sample)],
)  # fmt: skip
def test_sample_outputs_are_what_the_commands_print(command: str, sample: Callable[[], str]) -> None:
    readme = (ROOT / "README.md").read_text()
    block = f"```\n$ {command}\n{sample()}```\n"
    assert block in readme, f"README sample of `{command}` differs from what it prints; it prints:\n{block}"


def test_the_exit_code_table_is_checks() -> None:
    readme = (ROOT / "README.md").read_text()
    for code, word in [
        (exits.DONE, "complete"),
        (exits.INCOMPLETE, "incomplete"),
        (exits.USAGE, "bad flags"),
        (exits.NOTHING_TO_JUDGE, "nothing to judge"),
        (exits.UNREADABLE, "the store cannot be read"),
    ]:
        assert f"| {code} | {word}" in readme
        assert f"{code} {word}" in check.EXIT_CODES
