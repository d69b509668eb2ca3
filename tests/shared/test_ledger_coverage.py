"""The ledger's source coverage fields: optional (older agents), both or neither, counts within range."""

from __future__ import annotations

from typing import Any

import pytest

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import Ledger, decode_ledger, ledger_map

BASE = Ledger(1000, 2000, 3, 400, 5, 6, 0, 0)


def _decode(value: Any) -> Ledger:
    return decode_ledger(value, subject="s", data=b"")


def test_coverage_round_trips_and_older_ledgers_decode_unmeasured() -> None:
    measured = Ledger(1000, 2000, 3, 400, 5, 6, 0, 0, link_bytes=9000, boundary_bytes=380)
    assert _decode(ledger_map(measured)) == measured
    assert "link" not in ledger_map(BASE) and _decode(ledger_map(BASE)) == BASE
    assert BASE.link_bytes == -1 and BASE.boundary_bytes == 0
    zero = Ledger(1000, 2000, 3, 400, 5, 6, 0, 0, link_bytes=0, boundary_bytes=0)
    assert _decode(ledger_map(zero)) == zero  # measured and idle is not "not measured"


@pytest.mark.parametrize(
    "extra",
    [
        {"link": 5},  # one without the other
        {"bound": 5},
        {"link": -1, "bound": 0},
        {"link": 2**64 - 1, "bound": 0},  # beyond the Int64 column
        {"link": 5, "bound": "5"},
        {"link": 5.0, "bound": 5},
        {"link": True, "bound": 5},
    ],
)
def test_forged_coverage_is_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="coverage"):
        _decode({**ledger_map(BASE), **extra})
