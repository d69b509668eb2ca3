"""RAW ``owners`` (row index, pod UID pairs): round trip, optional, forged ones refused."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema import RawMessage, decode_raw, encode_raw
from tests.support.builders import message, raw_row

ROW = raw_row("tcp", ("10.0.0.1", 40000, "8.8.8.8", 443), ("8.8.8.8", 443, "10.0.0.1", 40000))


def _with(owners: Any) -> bytes:
    body = msgpack.unpackb(encode_raw(message([ROW, ROW._replace(orig_sport=1)])), raw=False)
    body["owners"] = owners
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def test_owners_round_trip_and_are_optional() -> None:
    msg = message([ROW])
    owned = RawMessage(msg.node, msg.boot, msg.start, 60, 0, 0, 1, rows=[ROW], owners={0: "uid-1"})
    assert decode_raw(encode_raw(owned)).owners == {0: "uid-1"}
    assert decode_raw(encode_raw(msg)).owners is None
    assert decode_raw(_with([[1, "u"]])).owners == {1: "u"}


@pytest.mark.parametrize(
    "owners",
    [
        {"0": "uid"},  # a map, not pairs
        [[2, "uid"]],  # no such row
        [[-1, "uid"]],
        [[2**64 - 1, "uid"]],
        [[0, ""]],
        [[0, "u" * 65]],
        [[0, "x" * (1 << 20)]],
        [[0, b"uid"]],
        [[0, "uid", "extra"]],
        [[True, "uid"]],
        "uid",
    ],
)
def test_forged_owners_are_refused(owners: Any) -> None:
    with pytest.raises(DecodeError, match="owners"):
        decode_raw(_with(owners))
