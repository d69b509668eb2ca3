"""The cost objects in ClickHouse: the price table and the view that prices the exact rows when read.

``kubenetmon_prices`` (one per database) holds every load of a price book, one row per (entry, priced
direction), stamped with the load's ``loadedAt``; only the newest load counts. ``<table>_cost`` is
``<table>_exact`` plus four columns computed at query time from that newest load, so loading a
corrected book re-prices the past:

- ``costCharge``: the kind of traffic (``pricebook.CHARGES``: same-zone, cross-zone, intra-region,
  inter-region, internet), '' for a class no charge covers (``UNKNOWN``);
- ``costEntry``: the book entry that priced the row, '' when none matches (the row is *unpriced*);
- ``costUSDPerGiB`` and ``costUSD``: the rate applied and ``bytes / 2^30 * rate``.

Each row is priced for its own local side and direction only (the who-pays rule in ``pricebook``): its
entry is the most specific one (longest literal region patterns, then id) of the row's ``localCloud``,
charge and direction whose ``from``/``to``/``service`` patterns match ``localRegion``, ``remoteRegion``
and ``remoteCloudService``. A tiered
price (internet egress) is blended: the month's tiered cost of all internet egress of that cloud in the
table, divided by those bytes, so a month's rows add up to exactly the tiered bill of its volume, and
each row pays its share. Enabled surcharges (NAT gateway, load balancer) add to internet rows.

Pure: statements only; ``migrate`` runs the DDL, ``prices`` loads the books.
"""

from __future__ import annotations

from typing import Final

from kubenetmon.writer.flow_tables import exact_view, fqn, q
from kubenetmon.writer.pricebook import CHARGES, GIB, PRICE_COLUMNS, SURCHARGES

PRICES_TABLE: Final = "kubenetmon_prices"
COST_COLUMNS: Final = ("costCharge", "costEntry", "costUSDPerGiB", "costUSD")


def cost_view(table: str) -> str:
    """Name of the view that adds the cost to the exact rows of ``table``."""
    return f"{table}_cost"


def create_price_table(database: str) -> str:
    """Every load of the price book; the newest ``loadedAt`` is the book in force."""
    columns = ",\n    ".join(f"{q(n)} {t}" for n, t in PRICE_COLUMNS)
    return f"""CREATE TABLE IF NOT EXISTS {fqn(database, PRICES_TABLE)} (
    `loadedAt` DateTime64(3),
    `book` String,
    {columns}
)
ENGINE = MergeTree
ORDER BY (loadedAt, cloud, charge, entry, direction)"""


def _book(database: str) -> str:
    """The newest load as a map ``'cloud/charge/direction' -> entries``, most specific entry first (a
    scalar, read once a query): a row looks up its few candidates instead of scanning the whole book.

    Entry tuple fields: 1 from pattern, 2 to pattern, 3 remote service pattern, 4 tier ends (GiB),
    5 tier prices (USD per GiB), 6 entry id, 7 specificity.
    """
    prices = fqn(database, PRICES_TABLE)
    return (
        "(SELECT mapFromArrays(groupArray(key), groupArray(entries)) FROM ("
        "SELECT concat(cloud, '/', charge, '/', direction) AS key, arraySort(e -> (-e.7, e.6), "
        "groupArray((fromRegion, toRegion, service, upToGiB, usdPerGiB, entry, specificity))) AS entries "
        f"FROM {prices} WHERE enabled AND loadedAt = (SELECT max(loadedAt) FROM {prices}) GROUP BY key))"
    )


def _match(charge: str) -> str:
    """The first matching entry of ``charge`` for the row (an empty tuple when none matches)."""
    candidates = f"_book[concat(f.localCloud, '/', {charge}, '/', toString(f.direction))]"
    return (
        "arrayFirst(e -> f.localRegion LIKE e.1 AND f.remoteRegion LIKE e.2 "
        f"AND f.remoteCloudService LIKE e.3, {candidates})"
    )


def _charge() -> str:
    branches = ", ".join(f"{c.when}, '{c.name}'" for c in CHARGES)
    return f"multiIf({branches}, '')"


# Blended tiered rate: tiered cost of the month's GiB / the month's GiB (first tier's rate at 0 GiB).
_TIERED_COST: Final = (
    "arraySum(i -> _price.5[i] * greatest(0, least(_monthGiB, _price.4[i]) - if(i = 1, 0, _price.4[i - 1])), "
    "arrayEnumerate(_price.4))"
)


def _rate() -> str:
    single = "if(empty(_price.5), 0, _price.5[1])"
    tiered = f"if(length(_price.5) > 1 AND _monthGiB > 0, {_TIERED_COST} / _monthGiB, {single})"
    surcharges = " + ".join(
        f"if(_charge = 'internet', {_match(repr(s))}.5[1], 0)" for s in SURCHARGES
    )  # an unmatched arrayFirst is an empty tuple: [1] of its empty array is 0
    return f"{tiered} + {surcharges}"


def create_cost_view(database: str, table: str) -> str:
    """``<table>_exact`` plus ``COST_COLUMNS``, priced by the newest price book load."""
    exact = fqn(database, exact_view(table))
    return f"""CREATE OR REPLACE VIEW {fqn(database, cost_view(table))} AS
SELECT * EXCEPT (_charge, _price, _monthGiB) FROM (
WITH {_book(database)} AS _book
SELECT
    f.*,
    {_charge()} AS _charge,
    {_match("_charge")} AS _price,
    ifNull(m.monthBytes, 0) / {GIB} AS _monthGiB,
    _charge AS costCharge,
    _price.6 AS costEntry,
    {_rate()} AS costUSDPerGiB,
    f.bytes / {GIB} * costUSDPerGiB AS costUSD
FROM {exact} AS f
LEFT JOIN (
    SELECT toStartOfMonth(date) AS month, localCloud AS cloud, sum(bytes) AS monthBytes
    FROM {exact}
    WHERE connectionClass = 'PUBLIC_INTERNET' AND direction = 'out'
    GROUP BY month, cloud
) AS m ON m.month = toStartOfMonth(f.date) AND m.cloud = f.localCloud
)"""
