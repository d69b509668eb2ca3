"""Price books: the shipped files are complete and valid; overrides merge by id; bad files say where."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kubenetmon.writer import pricebook
from kubenetmon.writer.pricebook import PriceBookError, Tier, tiered_cost


def _write(tmp_path: Path, text: str, name: str = "book.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_shipped_books_price_every_charge_of_each_cloud_with_source_and_date() -> None:
    book = pricebook.load()
    for cloud in ("aws", "gcp", "azure"):
        entries = [e for e in book.entries if e.cloud == cloud]
        priced = {e.charge for e in entries if e.enabled}
        assert priced == set(pricebook.CHARGE_NAMES), cloud
        assert {"nat-gateway"} <= {e.charge for e in entries if not e.enabled}, cloud
        for e in entries:
            assert e.source.startswith("https://") and e.effective.year >= 2024
        internet = next(e for e in entries if e.charge == "internet")
        assert internet.out is not None and len(internet.out) > 1 and math.isinf(internet.out[-1].up_to_gib)
        assert internet.in_ == (Tier(math.inf, 0.0),)  # ingress from the internet is free everywhere
    for text in (Path(pricebook.__file__).parent / "pricebooks").glob("*.yaml"):
        assert "LIST PRICES" in text.read_text() and "Not your contract" in text.read_text()


def test_an_override_replaces_only_the_fields_it_gives_and_adds_entries(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
entries:
  - {id: aws-cross-zone, out: 0.005}
  - {id: aws-nat-gateway, enabled: true}
  - id: onprem-internet
    cloud: onprem
    charge: internet
    out: 0.002
    source: https://example.com/contract
    effective: 2026-01-01
""",
    )
    book = pricebook.load([path])
    by_id = {e.id: e for e in book.entries}
    assert by_id["aws-cross-zone"].out == (Tier(math.inf, 0.005),)
    assert by_id["aws-cross-zone"].in_ == (Tier(math.inf, 0.01),)  # kept from the shipped book
    assert by_id["aws-cross-zone"].file == path
    assert by_id["aws-nat-gateway"].enabled
    assert by_id["onprem-internet"].cloud == "onprem" and by_id["onprem-internet"].in_ is None
    assert book.digest != pricebook.load().digest
    assert pricebook.load([path]).digest == book.digest  # the same book, the same identity


def test_tiered_cost_crosses_tier_boundaries() -> None:
    aws = next(e for e in pricebook.load().entries if e.id == "aws-internet").out
    assert aws is not None
    assert tiered_cost(aws, 100) == 0
    assert tiered_cost(aws, 12000) == pytest.approx(10140 * 0.09 + 1760 * 0.085)
    assert tiered_cost(aws, 200000) == pytest.approx(
        10140 * 0.09 + 40960 * 0.085 + 102400 * 0.07 + 46400 * 0.05
    )


ENTRY = (
    "entries:\n"
    "  - {id: x, cloud: aws, charge: cross-zone, out: 0.01, source: 'https://e.com', effective: 2026-01-01"
)
_TIERS_DOWN = "{tiers: [{up_to_gib: 10, usd_per_gib: 1}, {up_to_gib: 5, usd_per_gib: 1}, {usd_per_gib: 0}]}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entries: [", r"book\.yaml: not valid YAML \(line 1\)"),
        ("- 1", r"book\.yaml: expected a mapping with a list of `entries`"),
        ("currency: EUR\nentries: []", r"book\.yaml: currency: only USD"),
        ("entries:\n  - 3", r"book\.yaml: entry #1: expected a mapping"),
        ("entries:\n  - {id: Bad Id}", r"book\.yaml: entry #1: field id: expected a lower-case name"),
        (ENTRY + ", colour: red}", r"book\.yaml: entry x: field colour: not a price book field"),
        (ENTRY.replace("cross-zone", "teleport") + "}", r"entry x: field charge: expected one of"),
        (ENTRY.replace("0.01", "-1") + "}", r"entry x: field out: expected USD per GiB, a number from 0"),
        (ENTRY.replace("0.01", "'cheap'") + "}", r"entry x: field out: expected USD per GiB \(a number\)"),
        (
            ENTRY.replace("out: 0.01", "in: 0") + ", from: 'US East'}",
            r"entry x: field from: expected a region",
        ),
        (ENTRY.replace("out: 0.01, ", "") + "}", r"entry x: field out: an entry prices at least one"),
        (ENTRY.replace("'https://e.com'", "pricing page") + "}", r"entry x: field source: expected the URL"),
        (ENTRY.replace("2026-01-01", "soon") + "}", r"entry x: field effective: expected a date"),
        (ENTRY + ", enabled: maybe}", r"entry x: field enabled: expected true or false"),
        (ENTRY + "}\n" + ENTRY.removeprefix("entries:\n") + "}", r"entry x: field id: defined twice"),
        (ENTRY.replace("0.01", "{tiers: [{usd_per_gib: 1}]}") + "}", r"field out: tiers apply only to"),
        (
            ENTRY.replace("cross-zone", "internet").replace("out: 0.01", "in: {tiers: [{usd_per_gib: 1}]}")
            + "}",
            r"entry x: field in: tiers apply only to the egress \(out\) of internet",
        ),
        (
            ENTRY.replace("cross-zone", "internet").replace(
                "0.01", "{tiers: [{up_to_gib: 10, usd_per_gib: 1}, {up_to_gib: 5, usd_per_gib: 1}]}"
            )
            + "}",
            r"entry x: field out: tier 2: the last tier has no up_to_gib",
        ),
        (
            ENTRY.replace("cross-zone", "internet").replace(
                "0.01",
                _TIERS_DOWN,
            )
            + "}",
            r"entry x: field out: tier 2: up_to_gib must be a number above the previous tier's \(10\)",
        ),
        (
            ENTRY.replace("cross-zone", "internet").replace("0.01", "{tiers: [{usd_per_gib: -1}]}") + "}",
            r"entry x: field out: tier 1: expected USD per GiB, a number from 0, got -1",
        ),
        ("entries:\n  - {id: aws-cross-zone, out: free}", r"entry aws-cross-zone: field out: expected USD"),
        (
            "entries:\n  - {id: aws-internet, charge: same-zone}",
            r"entry aws-internet: field out: tiers apply",
        ),
    ],
)
def test_a_bad_book_is_one_error_naming_file_entry_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PriceBookError, match=message) as caught:
        pricebook.load([path])
    assert path in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PriceBookError, match=r"--price-book .*nope\.yaml: cannot read it"):
        pricebook.load([str(tmp_path / "nope.yaml")])


def test_the_readme_example_is_a_valid_override(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    book = pricebook.load([_write(tmp_path, example)])
    by_id = {e.id: e for e in book.entries}
    assert by_id["aws-cross-zone"].out == (Tier(math.inf, 0.008),) and by_id["aws-nat-gateway"].enabled
    assert by_id["aws-inter-region-ap"].from_region == "ap-*"
