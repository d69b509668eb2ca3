"""DNS names of remote addresses: what a RAW report may say about the name an address was answered for.

Why it exists: the agent watches DNS answers on its node and, next to a report's rows, states the name
each address of those rows was answered for (if exactly one name answered it and the answer was still
valid in the report's span). The enricher attaches that name to rows whose remote side is outside the
cluster (``remoteDNSName``). Both sides agree here on what a name may look like, so a forged or garbled
name is refused at the edge instead of stored.

It travels as the optional ``names`` map of a RAW message (address bytes -> name); agents before it send
none and decoders accept both, so no version changes. Pure: validation and strict decoding, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Final

from kubenetmon.shared.errors import DecodeError
from kubenetmon.shared.schema.limits import ADDRESS_LENGTH

MAX_NAME_LENGTH: Final = 253
"""A DNS name in text form, without the final dot: at most 253 characters."""
_NAME: Final = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)
"""Lower-case labels of letters, digits, ``-`` and ``_`` (not at a label's ends), 1 to 63 long."""
_LENGTHS: Final = frozenset(ADDRESS_LENGTH.values())


def valid_name(name: object) -> bool:
    """Whether ``name`` is a plausible host name as the agent writes it (lower case, no final dot)."""
    return type(name) is str and 0 < len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def encoded_size(address: bytes, name: str) -> int:
    """Upper bound of one entry's msgpack encoding (a bin key and a str value)."""
    return 2 + len(address) + 3 + len(name)


def decode_names(obj: Any, *, subject: str, data: bytes) -> dict[bytes, str]:
    """The ``names`` map of a RAW message, checked entry by entry; else ``DecodeError``."""
    if type(obj) is not dict:
        raise DecodeError("schema", "field 'names' must be a map", subject=subject, data=data)
    for address, name in obj.items():
        if type(address) is not bytes or len(address) not in _LENGTHS:
            raise DecodeError(
                "address", f"names: key {address!r:.40} is not an address", subject=subject, data=data
            )
        if not valid_name(name):
            raise DecodeError("schema", f"names: {name!r:.80} is not a host name", subject=subject, data=data)
    return obj
