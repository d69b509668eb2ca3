"""The ledger on the wire: RAW ``ledger`` and ENRICHED ``report`` round-trip, messages without them (the
older form) still decode, and a malformed ledger is a ``DecodeError`` like any other bad input."""

from __future__ import annotations

import msgpack
import pytest

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.ledger import TIMESTAMPS_UNKNOWN, Ledger, ReportRow
from kubenetmon.shared.schema import (
    EnrichedMessage,
    RawMessage,
    decode_enriched,
    decode_raw,
    encode_enriched,
    encode_raw,
)

LEDGER = Ledger(1_800_000_000_000, 1_800_000_060_500, 3, 4096, 12, 40, 1, 2)
REPORT = ReportRow("boot-a", 1_800_000_000, 60, 7, 1, 2, 3, LEDGER)
REJECTED = ReportRow("boot-a", 1_800_000_000, 60, 7, 1, 2, 0, Ledger(0, 0, 0, 0, 0, 0, 0, 0), "counter")


def test_raw_ledger_round_trips_and_the_old_form_still_decodes() -> None:
    msg = RawMessage("n1", "boot-a", 1_800_000_000, 60, 7, 0, 1, [], ledger=LEDGER)
    assert decode_raw(encode_raw(msg)) == msg and decode_raw(encode_raw(msg)).ledger == LEDGER
    old = RawMessage("n1", "boot-a", 1_800_000_000, 60, 7, 0, 1, [])
    assert decode_raw(encode_raw(old)).ledger is None


def test_enriched_report_round_trips_and_the_old_form_still_decodes() -> None:
    msg = EnrichedMessage("n1/boot-a/1800000000/7/1", "n1", 5, ["bytes"], [[10]], report=REPORT)
    assert decode_enriched(encode_enriched(msg)) == msg
    old = EnrichedMessage("n1/boot-a/1800000000/7/1", "n1", 5, ["bytes"], [[10]])
    assert decode_enriched(encode_enriched(old)).report is None
    rejected = EnrichedMessage("n1/boot-a/1800000000/7/1", "n1", 5, ["bytes"], [[]], report=REJECTED)
    assert decode_enriched(encode_enriched(rejected)).report == REJECTED
    assert "rejected" not in msgpack.unpackb(encode_enriched(msg))["report"]  # accepted: as before


def _raw_with(ledger: object) -> bytes:
    body = msgpack.unpackb(encode_raw(RawMessage("n1", "b", 60, 60, 0, 0, 1, [])))
    body["ledger"] = ledger
    return bytes(msgpack.packb(body, use_bin_type=True))


@pytest.mark.parametrize(
    "ledger",
    [
        [],
        {},
        {"from": 1, "to": 2},
        dict.fromkeys(("from", "to", "rows", "bytes", "packets", "flows", "lost", "drops"), -1),
        {**dict.fromkeys(("from", "to", "rows", "bytes", "packets", "flows", "lost", "drops"), 0), "to": "x"},
        {**dict.fromkeys(("from", "to", "rows", "bytes", "packets", "flows", "lost", "drops"), 0), "from": 5},
    ],
)
def test_a_malformed_ledger_is_a_decode_error(ledger: object) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_raw(_raw_with(ledger))
    assert caught.value.reason == "schema"


@pytest.mark.parametrize(
    "change",
    [
        {"boot": ""}, {"chunk": 2}, {"secs": 0}, {"start": 1 << 40}, {"seq": -1}, {"chunks": "2"},
        {"rejected": 1}, {"rejected": "x" * 65}, {"rejected": "a\nb"},
    ],
)  # fmt: skip
def test_a_malformed_report_is_a_decode_error(change: dict[str, object]) -> None:
    msg = EnrichedMessage("src", "n1", 5, ["bytes"], [[10]], report=REPORT)
    body = msgpack.unpackb(encode_enriched(msg))
    body["report"].update(change)
    with pytest.raises(DecodeError):
        decode_enriched(bytes(msgpack.packb(body, use_bin_type=True)))


@pytest.mark.parametrize("stamps", [0, 1])
def test_the_timestamps_field_round_trips_and_a_ledger_without_it_is_unknown(stamps: int) -> None:
    stamped = Ledger(1_800_000_000_000, 1_800_000_060_500, 3, 4096, 12, 40, 1, 2, stamps)
    msg = RawMessage("n1", "boot-a", 1_800_000_000, 60, 7, 0, 1, [], ledger=stamped)
    assert decode_raw(encode_raw(msg)).ledger == stamped
    row = ReportRow("boot-a", 1_800_000_000, 60, 7, 0, 1, 0, stamped)
    enriched = EnrichedMessage("n1/boot-a/1800000000/7/0", "n1", 5, ["bytes"], [[10]], report=row)
    decoded = decode_enriched(encode_enriched(enriched)).report
    assert decoded is not None and decoded.ledger.timestamps == stamps
    # a ledger from an agent before the field (no "ts"): decodes, the state unknown
    assert (
        LEDGER.timestamps == TIMESTAMPS_UNKNOWN
        and "ts"
        not in msgpack.unpackb(encode_raw(RawMessage("n1", "b", 60, 60, 0, 0, 1, [], ledger=LEDGER)))[
            "ledger"
        ]
    )


@pytest.mark.parametrize("value", [2, -1, "1", True, 1.0, None, 2**64 - 1])
def test_a_timestamps_field_other_than_0_or_1_is_a_decode_error(value: object) -> None:
    good = msgpack.unpackb(encode_raw(RawMessage("n1", "b", 60, 60, 0, 0, 1, [], ledger=LEDGER)))["ledger"]
    with pytest.raises(DecodeError) as caught:
        decode_raw(_raw_with({**good, "ts": value}))
    assert caught.value.reason == "schema"
