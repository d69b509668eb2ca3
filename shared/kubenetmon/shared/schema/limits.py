"""The numbers both wire contracts agree on: versions, size bounds, address families, protocols.

Why a module of its own: the agent's settings, the RAW and ENRICHED codecs and the enricher all read
these, and none of them should have to import a codec to get a constant. Plain constants only: no
logic, no imports from the rest of the package.
"""

from __future__ import annotations

from typing import Final

RAW_VERSION: Final = 2
"""What agents write: v2 is the column layout of byte planes (``planes``)."""
RAW_VERSIONS: Final = (1, 2)
"""What the enricher reads: v1 (a msgpack array per row) still decodes, so a stream written before v2
replays, and agents of both releases may publish side by side during an upgrade."""
ENRICHED_VERSION: Final = 2
"""What the enricher writes: v2 is the dictionary-coded layout (``layout``)."""
ENRICHED_VERSIONS: Final = (1, 2)
"""What the writer reads: v1 (plain arrays) still decodes, so a stream written before v2 replays."""
MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024
"""Decoders refuse larger payloads outright (``oversized``) before unpacking anything."""
MAX_NODE_LENGTH: Final = 253
"""A Kubernetes node name is a DNS subdomain: at most 253 characters."""
MAX_BOOT_LENGTH: Final = 64
"""A boot id is a UUID (36 characters); room to spare, but bounded."""
MAX_INTERVAL_SECONDS: Final = 0xFFFF
"""Longest interval a record may span: ``intervalSeconds`` is a UInt16 column."""

AF_INET: Final = 2
AF_INET6: Final = 10
ADDRESS_LENGTH: Final = {AF_INET: 4, AF_INET6: 16}
PROTO_NAMES: Final = {6: "TCP", 17: "UDP", 132: "SCTP"}

U64: Final = (1 << 64) - 1
U32: Final = (1 << 32) - 1
