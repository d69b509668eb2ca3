"""Price books: what a byte of each kind of traffic costs, and the one rule that says which side pays.

A price book is a YAML file of entries, each the list price (USD per GiB) of one charge for one cloud,
per direction, with its source and effective date. The shipped books (``pricebooks/*.yaml``: AWS, GCP,
Azure list prices) are always read; ``--price-book FILE`` adds entries or overrides shipped ones by ``id``
(only the fields it gives), for contracted rates or other clouds. Every problem is one ``PriceBookError``
naming the file, the entry, the field and what is wrong.

**Who pays** (``CHARGES``; the README's Cost section says the same): every flow row is priced for its own
local side only, at that side's rate for the row's direction: an ``out`` row is the local side's egress,
an ``in`` row its ingress. A cross-node flow seen by both nodes is two rows per byte, the sender's ``out``
and the receiver's ``in``: two different sides, each charged once, so no side is ever charged twice.
Which class and direction costs anything is then a matter of the book (cross-zone: both sides on AWS;
internet: egress only...).

Pure: parsing and validation only, no ClickHouse here (``prices`` loads the rows built here).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

from kubenetmon.shared.errors import ConfigError

GIB: Final = 1 << 30
DIRECTIONS: Final = ("out", "in")


@dataclass(frozen=True)
class Charge:
    """A kind of traffic a book prices: which flow rows it covers (SQL over a flow row), and who pays."""

    name: str
    when: str
    who_pays: str


CHARGES: Final = (
    Charge(
        "same-zone",
        "connectionClass = 'INTRA_VPC' AND NOT crossZone",
        "private traffic not known to cross zones (also when a zone is unknown): each side at its rate",
    ),
    Charge(
        "cross-zone",
        "connectionClass = 'INTRA_VPC' AND crossZone",
        "both sides: the sender's egress on its out row, the receiver's ingress on its in row",
    ),
    Charge(
        "intra-region",
        "connectionClass = 'INTRA_REGION'",
        "the local side, per direction (public addresses and services of the same region)",
    ),
    Charge(
        "inter-region",
        "connectionClass = 'INTER_REGION'",
        "the local side, per direction, by (local region, remote region); usually egress only",
    ),
    Charge(
        "internet",
        "connectionClass = 'PUBLIC_INTERNET'",
        "the local side, per direction; egress tiers apply to the month's internet egress of the cloud",
    ),
)
CHARGE_NAMES: Final = tuple(c.name for c in CHARGES)
SURCHARGES: Final = ("nat-gateway", "load-balancer")
"""Processing charges added to ``internet`` rows (both directions) when their entry is ``enabled``."""
TIERED: Final = ("internet",)
"""Charges whose egress may be tiered by the month's volume (the view blends it over the month's rows)."""

_ID: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_CLOUD: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
_REGION: Final = re.compile(r"^[a-z0-9*][a-z0-9*_-]{0,62}$")
_FIELDS: Final = frozenset(
    {"id", "cloud", "charge", "from", "to", "service", "out", "in", "source", "effective", "enabled", "note"}
)
SHIPPED: Final = ("aws.yaml", "gcp.yaml", "azure.yaml")


class PriceBookError(ConfigError):
    """A price book that cannot be used; the message names file, entry and field."""


_Complaint = Callable[[str], PriceBookError]
"""Builds the error of one field from what is wrong with it."""


@dataclass(frozen=True)
class Tier:
    """Price of the GiB up to ``up_to_gib`` of the month's volume (``inf`` for the last tier)."""

    up_to_gib: float
    usd_per_gib: float


@dataclass(frozen=True)
class Entry:
    """One priced charge of one cloud; ``out``/``in`` are None when the entry does not price them."""

    id: str
    cloud: str
    charge: str
    from_region: str
    to_region: str
    service: str
    out: tuple[Tier, ...] | None
    in_: tuple[Tier, ...] | None
    source: str
    effective: date
    enabled: bool
    file: str


@dataclass(frozen=True)
class PriceBook:
    entries: tuple[Entry, ...]
    files: tuple[str, ...]

    @property
    def digest(self) -> str:
        """Identity of the book's contents (what a load is compared by)."""
        rows = [list(map(str, r)) for r in table_rows(self)]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ reading


def load(paths: Iterable[str] = (), *, shipped: bool = True) -> PriceBook:
    """The shipped books (unless ``shipped`` is False), then each file of ``paths`` on top, in order."""
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    files: list[str] = []
    if shipped:
        for name in SHIPPED:
            text = resources.files("kubenetmon.writer").joinpath("pricebooks", name).read_text()
            _merge(raw, _parse(text, file=f"pricebooks/{name}"), file=f"pricebooks/{name}", override=False)
            files.append(f"pricebooks/{name}")
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PriceBookError(f"--price-book {path}: cannot read it: {exc.strerror}") from None
        _merge(raw, _parse(text, file=path), file=path, override=True)
        files.append(path)
    entries = tuple(_entry(fields, file=file) for file, fields in raw.values())
    return PriceBook(entries=entries, files=tuple(files))


def _parse(text: str, *, file: str) -> list[dict[str, Any]]:
    """The entries of one file, each with its file-level ``cloud`` filled in; structure checked."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise PriceBookError(f"{file}: not valid YAML{line}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise PriceBookError(f"{file}: expected a mapping with a list of `entries`")
    currency = doc.get("currency", "USD")
    if currency != "USD":
        raise PriceBookError(f"{file}: currency: only USD is supported, got {currency!r}")
    cloud = doc.get("cloud")
    out = []
    for n, item in enumerate(doc["entries"], start=1):
        if not isinstance(item, dict):
            raise PriceBookError(f"{file}: entry #{n}: expected a mapping of fields")
        name = item.get("id")
        if not isinstance(name, str) or not _ID.match(name):
            raise PriceBookError(f"{file}: entry #{n}: field id: expected a lower-case name, got {name!r}")
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise PriceBookError(f"{file}: entry {name}: field {unknown[0]}: not a price book field")
        out.append({"cloud": cloud, **item} if cloud is not None else dict(item))
    return out


def _merge(
    raw: dict[str, tuple[str, dict[str, Any]]], items: list[dict[str, Any]], *, file: str, override: bool
) -> None:
    seen: set[str] = set()
    for item in items:
        name = item["id"]
        if name in seen or (name in raw and not override):
            raise PriceBookError(f"{file}: entry {name}: field id: defined twice")
        seen.add(name)
        raw[name] = (file, {**raw[name][1], **item} if name in raw else item)


def _entry(fields: Mapping[str, Any], *, file: str) -> Entry:
    name = fields["id"]

    def bad(field: str, what: str) -> PriceBookError:
        return PriceBookError(f"{file}: entry {name}: field {field}: {what}")

    cloud, charge = fields.get("cloud"), fields.get("charge")
    if not isinstance(cloud, str) or not _CLOUD.match(cloud):
        raise bad("cloud", f"expected a lower-case cloud name (aws, gcp, azure...), got {cloud!r}")
    if charge not in (*CHARGE_NAMES, *SURCHARGES):
        raise bad("charge", f"expected one of {', '.join((*CHARGE_NAMES, *SURCHARGES))}, got {charge!r}")
    regions = {}
    for field in ("from", "to", "service"):
        value = fields.get(field, "*")
        if not isinstance(value, str) or not _REGION.match(value):
            kind = "cloud service" if field == "service" else "region"
            raise bad(field, f"expected a {kind} name, * as a wildcard, got {value!r}")
        regions[field] = value
    prices = {
        d: _prices(fields.get(d), tiered=charge in TIERED and d == "out", bad=functools.partial(bad, d))
        for d in DIRECTIONS
    }
    if prices["out"] is None and prices["in"] is None:
        raise bad("out", "an entry prices at least one direction (out or in)")
    source = fields.get("source")
    if not isinstance(source, str) or not source.startswith(("https://", "http://")):
        raise bad("source", f"expected the URL of the pricing page, got {source!r}")
    effective = fields.get("effective")
    if not isinstance(effective, date):
        raise bad("effective", f"expected a date (YYYY-MM-DD), got {effective!r}")
    enabled = fields.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad("enabled", f"expected true or false, got {enabled!r}")
    return Entry(
        id=name,
        cloud=cloud,
        charge=charge,
        from_region=regions["from"],
        to_region=regions["to"],
        service=regions["service"],
        out=prices["out"],
        in_=prices["in"],
        source=source,
        effective=effective,
        enabled=enabled,
        file=file,
    )


def _prices(value: Any, *, tiered: bool, bad: _Complaint) -> tuple[Tier, ...] | None:
    """``0.01`` -> one unbounded tier; ``{tiers: [{up_to_gib, usd_per_gib}...]}`` -> the tiers."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (Tier(math.inf, _usd(value, bad=bad)),)
    if not isinstance(value, dict) or set(value) != {"tiers"} or not isinstance(value["tiers"], list):
        raise bad("expected USD per GiB (a number) or a mapping with a list of `tiers`")
    if not tiered:
        raise bad(f"tiers apply only to the egress (out) of {', '.join(TIERED)}: give one price")
    tiers, last = [], 0.0
    for n, tier in enumerate(value["tiers"], start=1):
        if not isinstance(tier, dict) or not set(tier) <= {"up_to_gib", "usd_per_gib"}:
            raise bad(f"tier {n}: expected up_to_gib and usd_per_gib")
        final = n == len(value["tiers"])
        up_to = tier.get("up_to_gib", math.inf if final else None)
        if final and "up_to_gib" in tier:
            raise bad(f"tier {n}: the last tier has no up_to_gib (it covers the rest of the month)")
        if not isinstance(up_to, (int, float)) or isinstance(up_to, bool) or up_to <= last:
            raise bad(f"tier {n}: up_to_gib must be a number above the previous tier's ({last:g})")
        tiers.append(Tier(float(up_to), _usd(tier.get("usd_per_gib"), bad=bad, where=f"tier {n}: ")))
        last = float(up_to)
    if not tiers:
        raise bad("tiers: expected at least one tier")
    return tuple(tiers)


def _usd(value: Any, *, bad: _Complaint, where: str = "") -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1000:
        raise bad(f"{where}expected USD per GiB, a number from 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------- table rows

PRICE_COLUMNS: Final = (
    ("entry", "String"),
    ("cloud", "LowCardinality(String)"),
    ("charge", "LowCardinality(String)"),
    ("direction", "LowCardinality(String)"),
    ("fromRegion", "String"),
    ("toRegion", "String"),
    ("service", "String"),
    ("specificity", "UInt16"),
    ("upToGiB", "Array(Float64)"),
    ("usdPerGiB", "Array(Float64)"),
    ("enabled", "Bool"),
    ("source", "String"),
    ("effective", "Date"),
    ("file", "String"),
)


def like_pattern(region: str) -> str:
    """A region glob (``*`` any run) as a LIKE pattern; region names hold no LIKE metacharacter but ``_``."""
    return region.replace("_", "\\_").replace("*", "%")


def table_rows(book: PriceBook) -> list[tuple[Any, ...]]:
    """One row per (entry, priced direction), in ``PRICE_COLUMNS`` order; ``inf`` kept for the last tier."""
    rows = []
    for e in book.entries:
        specificity = sum(len(r.replace("*", "")) for r in (e.from_region, e.to_region, e.service))
        for direction, tiers in (("out", e.out), ("in", e.in_)):
            if tiers is None:
                continue
            rows.append(
                (
                    e.id,
                    e.cloud,
                    e.charge,
                    direction,
                    like_pattern(e.from_region),
                    like_pattern(e.to_region),
                    like_pattern(e.service),
                    specificity,
                    [t.up_to_gib for t in tiers],
                    [t.usd_per_gib for t in tiers],
                    e.enabled,
                    e.source,
                    e.effective,
                    e.file,
                )
            )
    return rows


def tiered_cost(tiers: tuple[Tier, ...], gib: float) -> float:
    """USD for ``gib`` of one month's volume through ``tiers`` (what the view computes in SQL)."""
    total, low = 0.0, 0.0
    for t in tiers:
        total += t.usd_per_gib * max(0.0, min(gib, t.up_to_gib) - low)
        low = t.up_to_gib
    return total
