"""Whatever RAW message the decoder accepts, the enricher's output is something the writer accepts.

Anything the decoder lets through (any protocol, family, zone, port, counter up to 2**64-1, node and
boot ids up to their bounds, addresses known to the index or not) is labelled; each ENRICHED part must
then decode with the writer's strict decoder and stay far below the message size limit. Otherwise a
valid agent report would end in the writer's DLQ, or blow up the enricher.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from kubenetmon.enricher.labeler import Labeler
from kubenetmon.enricher.worker import parts
from kubenetmon.shared import schema
from tests.support.builders import T0
from tests.support.enricher import NODES, PODS, SERVICES, make_labeler

KNOWN_V4 = [
    ipaddress.IPv4Address(a).packed
    for a in (
        "10.1.0.10",
        "10.1.0.11",
        "10.1.1.10",
        "10.96.0.20",
        "192.168.0.1",
        "192.168.0.2",
        "3.5.140.9",
        "8.8.8.8",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "169.254.1.1",
        "100.64.0.1",
        "224.0.0.1",
    )
]
KNOWN_V6 = [
    ipaddress.IPv6Address(a).packed for a in ("::1", "::", "fe80::1", "2600:1f00::1", "::ffff:10.1.0.10")
]
U16 = st.integers(0, 0xFFFF)
U64 = st.integers(0, (1 << 64) - 1)
MAX_ROWS = 1000


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` four times in five, else ``rare``: realistic values, with the odd one in between."""
    return st.integers(0, 4).flatmap(lambda k: common if k else rare)


@st.composite
def raw_rows(draw: Any) -> list[schema.RawRow]:
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        family = draw(st.sampled_from([schema.AF_INET, schema.AF_INET, schema.AF_INET6]))
        size = schema.ADDRESS_LENGTH[family]
        known = KNOWN_V4 if family == schema.AF_INET else KNOWN_V6
        # mostly addresses the index knows (so records are kept and labelled), sometimes any
        addr = mostly(st.sampled_from(known), st.binary(min_size=size, max_size=size))
        proto = draw(mostly(st.sampled_from([6, 17]), st.integers(0, 255)))
        rows.append(
            schema.RawRow(
                proto,
                family,
                draw(U16),
                draw(addr),
                draw(addr),
                draw(U16),
                draw(U16),
                draw(addr),
                draw(addr),
                draw(U16),
                draw(U16),
                draw(U64),
                draw(U64),
                draw(U64),
                draw(U64),
            )
        )
    return rows


@st.composite
def raw_messages(draw: Any) -> schema.RawMessage:
    chunks = draw(st.integers(1, 1 << 32))
    node = mostly(st.sampled_from(["n1", "n2"]), st.text(min_size=1, max_size=schema.MAX_NODE_LENGTH))
    return schema.RawMessage(
        draw(node),
        draw(st.text(min_size=1, max_size=schema.MAX_BOOT_LENGTH)),
        draw(mostly(st.sampled_from([T0, T0 + 60]), st.integers(0, (1 << 32) - 1))),  # pods: from T0 - 1h
        draw(mostly(st.just(60), st.integers(1, 0xFFFF))),
        draw(U64),
        draw(st.integers(0, chunks - 1)),
        chunks,
        draw(raw_rows()),
    )


@pytest.fixture(scope="module")
def labeler(tmp_path_factory: pytest.TempPathFactory) -> Labeler:
    import yaml  # type: ignore[import-untyped]

    path: Path = tmp_path_factory.mktemp("inventory") / "inventory.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [*NODES, *PODS, *SERVICES]}))
    return make_labeler(path)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=raw_messages(), enriched_at=U64)
def test_every_valid_raw_message_enriches_into_messages_the_writer_accepts(
    labeler: Labeler, msg: schema.RawMessage, enriched_at: int
) -> None:
    decoded = schema.decode_raw(schema.encode_raw(msg))
    labelled = labeler.label(decoded, enriched_at=enriched_at)
    target(labelled.stats.rows)  # steer towards messages whose records are kept
    for data in parts(labelled, max_rows=MAX_ROWS):
        payload = schema.encode_enriched(
            schema.EnrichedMessage(decoded.msg_id, decoded.node, enriched_at, labelled.columns, data)
        )
        out = schema.decode_enriched(payload)
        assert out.row_count == len(data[0])
        # every string in a row is bounded (names from the index, node and boot ids): ~2 KB per row
        assert len(payload) <= 2048 * max(1, out.row_count) + 4096
