"""Wire contracts between the stages: RAW (agent -> enricher) and ENRICHED (enricher -> writer).

Both are msgpack maps with a major version ``v``. Decoding is strict: anything that is not a
well-formed message of the expected kind and major version raises ``DecodeError`` and nothing else,
so a consumer can send it to the DLQ without ever crashing or blocking the stream.

This package must stay free of I/O and of any service's imports: it is the one place the stages agree.
Its modules, from the bottom up:

- ``limits``: versions, size bounds, address families, protocol names;
- ``domains``: what values a field may hold, checked value by value and column by column;
- ``flow``: the flow tuple (``FlowTuple``), the one definition of a flow's identity fields, which the
  agent's conntrack keys and ``RawRow`` extend;
- ``identity``: message ids and row ids (``flow_id``), stable across processes and replays;
- ``envelope``: the msgpack map framing both messages share (size, kind and version checks);
- ``names``: what a DNS name of a remote address may look like (RAW's optional ``names`` map);
- ``raw`` and ``enriched``: each contract's message, its codec and its validation.

Importers use the names re-exported here. They are loaded on first use (a module ``__getattr__``,
PEP 562): the agent's conntrack decoder needs only ``flow``, and ``kubenetmon conntrack dump`` should not
pay for msgpack, xxhash and the codecs at start-up. Type checkers read the plain imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from kubenetmon.shared.schema.enriched import (
        _COLUMN_CHECK,
        COLUMN_INDEX,
        COLUMN_NAMES,
        COLUMNS,
        NODE_COLUMNS,
        Column,
        EnrichedMessage,
        _column_valid,
        decode_enriched,
        encode_enriched,
    )
    from kubenetmon.shared.schema.flow import FLOW_FIELDS, FlowTuple
    from kubenetmon.shared.schema.identity import (
        IN_FLIP,
        enriched_msg_id,
        flow_id,
        flow_ids,
        identities,
        keyed_msg_id,
        raw_msg_id,
        record_of,
    )
    from kubenetmon.shared.schema.limits import (
        ADDRESS_LENGTH,
        AF_INET,
        AF_INET6,
        ENRICHED_VERSION,
        MAX_BOOT_LENGTH,
        MAX_INTERVAL_SECONDS,
        MAX_MESSAGE_BYTES,
        MAX_NODE_LENGTH,
        PROTO_NAMES,
        RAW_VERSION,
        RAW_VERSIONS,
    )
    from kubenetmon.shared.schema.raw import (
        RAW_ROW_FIELDS,
        RawMessage,
        RawRow,
        _check_row,
        _rows_valid,
        decode_raw,
        encode_raw,
    )

__all__ = [
    "ADDRESS_LENGTH",
    "AF_INET",
    "AF_INET6",
    "COLUMNS",
    "COLUMN_INDEX",
    "COLUMN_NAMES",
    "ENRICHED_VERSION",
    "FLOW_FIELDS",
    "IN_FLIP",
    "MAX_BOOT_LENGTH",
    "MAX_INTERVAL_SECONDS",
    "MAX_MESSAGE_BYTES",
    "MAX_NODE_LENGTH",
    "NODE_COLUMNS",
    "PROTO_NAMES",
    "RAW_ROW_FIELDS",
    "RAW_VERSION",
    "RAW_VERSIONS",
    "_COLUMN_CHECK",
    "Column",
    "EnrichedMessage",
    "FlowTuple",
    "RawMessage",
    "RawRow",
    "_check_row",
    "_column_valid",
    "_rows_valid",
    "decode_enriched",
    "decode_raw",
    "encode_enriched",
    "encode_raw",
    "enriched_msg_id",
    "flow_id",
    "flow_ids",
    "identities",
    "keyed_msg_id",
    "raw_msg_id",
    "record_of",
]

_MODULES: Final = ("limits", "flow", "identity", "raw", "enriched")
"""Where the names of ``__all__`` live, cheapest first."""
_MISSING: Final = object()


def __getattr__(name: str) -> Any:
    """A name of ``__all__``, from the first module of ``_MODULES`` that has it (then kept here)."""
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, _MISSING)
            if value is not _MISSING:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
