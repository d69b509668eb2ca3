"""The framing both wire contracts share: a msgpack map with a kind ``t`` and a major version ``v``.

Why: RAW and ENRICHED are decoded the same way up to their own fields: refuse an oversized payload
before unpacking anything, unpack strictly, check the kind and version, read typed fields. Every problem
raises ``DecodeError`` (with the subject and the raw bytes, for the DLQ) and nothing else, so a consumer
never crashes or blocks its stream on bad input. This module knows no message's fields. No I/O.
"""

from __future__ import annotations

from typing import Any

import msgpack

from kubenetmon.shared.errors import DecodeError


def unpack(
    data: bytes, *, subject: str, kind: str, version: int | tuple[int, ...], max_bytes: int
) -> dict[str, Any]:
    """The top-level map of a ``kind`` message of major ``version`` (or one of them); else ``DecodeError``."""
    versions = version if isinstance(version, tuple) else (version,)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("malformed", "payload is not bytes", subject=subject, data=b"")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} bytes > {max_bytes}", subject=subject, data=data)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises many types (ExtraData, ValueError, UnicodeDecodeError...)
        raise DecodeError("malformed", f"not msgpack: {exc}", subject=subject, data=data) from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "top level is not a map", subject=subject, data=data)
    v = obj.get("v")
    if type(v) is not int:
        raise DecodeError("schema", "missing integer field 'v'", subject=subject, data=data)
    if v not in versions:
        want = " or ".join(map(str, versions))
        raise DecodeError(
            "version", f"unsupported {kind} version {v} (want {want})", subject=subject, data=data
        )
    if obj.get("t") != kind:
        raise DecodeError("schema", f"not a {kind} message (t={obj.get('t')!r})", subject=subject, data=data)
    return obj


def field(obj: dict[str, Any], name: str, typ: type, *, subject: str, data: bytes) -> Any:
    """``obj[name]`` if it is exactly of type ``typ`` (a ``bool`` is no ``int``); else ``DecodeError``."""
    value = obj.get(name)
    if type(value) is not typ:
        raise DecodeError(
            "schema",
            f"field {name!r} must be {typ.__name__}, got {type(value).__name__}",
            subject=subject,
            data=data,
        )
    return value
