"""A fast decoder for the conntrack (ctnetlink) messages the agent reads: dumps and DESTROY events.

Why: a generic netlink attribute parser costs ~100x ``conntrack -L`` per entry. The kernel lays out every
entry of the same shape (family, protocol, optional attributes) identically, so the first message of each
shape is walked attribute by attribute and its *layout* (where the key and counters are, plus the offset of
every top-level attribute header) is cached by (message length, family). A later message of that length is
verified with one ``struct`` unpack of all its top-level headers and counter headers, then sliced at fixed
offsets. A message that does not match is walked again: nothing is ever guessed.

The agent's hot path needs two byte strings per entry, both copied verbatim from the message:

- ``key``: the original and reply tuple attributes, the CTA_ZONE attribute if any, then the instance
  suffix: the 8-byte creation time (CTA_TIMESTAMP_START, zeros without ``nf_conntrack_timestamp``) and the
  4-byte conntrack id. It names one conntrack and is the same in dumps and DESTROY events. The id alone
  does not tell instances apart: it is a hash of the object's address and tuples, so a conntrack freed and
  reallocated for a new flow with the same tuples (an ephemeral port reused under churn) gets the same id.
  The creation time does.
- ``counters``: the two counter attributes in their canonical 56-byte form (``COUNTERS``), compared as
  bytes and decoded only when they changed.

``decode_key`` turns a key back into fields, only for flows that are reported. This module does no I/O.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from kubenetmon.shared.schema.flow import FlowTuple

NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_DUMP_INTR: Final = 0x10
CT_NEW: Final = 0x100  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (dump entries)
CT_DELETE: Final = 0x102  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE (DESTROY events)
DONE: Final = 1
"""``scan`` result flag: the dump's NLMSG_DONE was seen."""
INTERRUPTED: Final = 2
"""``scan`` result flag: the kernel marked the dump inconsistent (entries may be missing)."""

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID, CTA_ZONE = 8, 9, 10, 12, 18
CTA_TIMESTAMP, CTA_TIMESTAMP_START = 20, 1
INSTANCE: Final = 12
"""Length of a key's instance suffix: creation time (be64 ns, 0 when unknown) and conntrack id (be32)."""
NO_START: Final = bytes(8)
_NESTED: Final = 0x8000
IPS_DYING: Final = 1 << 9

COUNTERS: Final = struct.Struct(">8xQ4xQ8xQ4xQ")
"""The canonical counters: CTA_COUNTERS_ORIG then _REPLY, each a nest of PACKETS and BYTES (be64)."""
_COUNTER_NEST: Final = struct.Struct("=HHHH8sHH8s")
_HDR: Final = struct.Struct("=HH")
_NLMSG: Final = struct.Struct("=IHH")

Sink = Callable[[tuple[bytes, bytes]], None]
MAX_BRANCHES: Final = 64
"""Shapes matched by a decoder's regular expression (``Decoder.columns``); later ones take ``scan``'s path."""
NEVER: Final = re.compile(b"(?!)")
"""An expression that matches nothing (no shape learned yet)."""


def counters_blob(opk: int, oby: int, rpk: int, rby: int) -> bytes:
    """The canonical counters bytes for these values."""
    return b"".join(
        _COUNTER_NEST.pack(28, _NESTED | kind, 12, 1, p.to_bytes(8, "big"), 12, 2, b.to_bytes(8, "big"))
        for kind, p, b in ((CTA_COUNTERS_ORIG, opk, oby), (CTA_COUNTERS_REPLY, rpk, rby))
    )


ZERO_COUNTERS: Final = counters_blob(0, 0, 0, 0)


def counters(blob: bytes) -> tuple[int, int, int, int]:
    """``(orig_packets, orig_bytes, reply_packets, reply_bytes)`` of a canonical counters blob."""
    opk, oby, rpk, rby = COUNTERS.unpack(blob)
    return opk, oby, rpk, rby


def attrs(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Walk attributes of ``buf[start:end]``: ``(type, header offset, value offset, value length)``."""
    off = start
    while off + 4 <= end:
        length, kind = _HDR.unpack_from(buf, off)
        if length < 4 or off + length > end:
            raise ValueError(f"malformed attribute (length {length}) at {off}")
        yield kind & 0x3FFF, off, off + 4, length - 4
        off += (length + 3) & ~3


class Layout(NamedTuple):
    """Offsets, relative to the message start, shared by every message of one shape."""

    check: Callable[[bytes, int], tuple[int, ...]]
    """``unpack_from`` of a struct reading every header the layout relies on."""
    expect: tuple[int, ...]
    key_start: int
    key_end: int
    id_start: int
    id_end: int
    cnt_start: int
    cnt_end: int
    dying_at: int
    """The status byte holding IPS_DYING (as its bit 1: status is big-endian, the bit is 9)."""
    ts_start: int
    ts_end: int
    ts_pad: bytes
    """``NO_START`` when the shape has no creation time (then ``ts_start == ts_end``), else empty."""
    mark_at: int
    """The CTA_MARK value (be32), or -1: the shape has none (for the dump tool)."""
    state_at: int
    """The protocol state byte (TCP or SCTP), or -1: the shape has none (for the dump tool)."""
    headers: tuple[int, ...]
    """Where every attribute header ``check`` reads is, relative to the message start."""


class Message(NamedTuple):
    """Everything the agent uses from one conntrack message, found by walking it."""

    key: bytes
    counters: bytes
    status: int
    mark: int
    state: int  # -1 when the protocol has no state attribute
    layout: Layout | None


def _u(buf: bytes, off: int, n: int) -> int:
    return int.from_bytes(buf[off : off + n], "big")


def _counter_pair(buf: bytes, voff: int, vlen: int) -> tuple[int, int]:
    pk = by = 0
    for kind, _, o, n in attrs(buf, voff, voff + vlen):
        if kind in (1, 3) and n in (4, 8):  # PACKETS (be64) or PACKETS32 (old kernels)
            pk = _u(buf, o, n)
        elif kind in (2, 4) and n in (4, 8):
            by = _u(buf, o, n)
    return pk, by


def _start(buf: bytes, voff: int, vlen: int) -> int:
    """Offset of the CTA_TIMESTAMP_START value (be64) in a CTA_TIMESTAMP nest, or -1."""
    for kind, _, o, n in attrs(buf, voff, voff + vlen):
        if kind == CTA_TIMESTAMP_START and n == 8:
            return o
    return -1


def _state_at(buf: bytes, voff: int, vlen: int) -> tuple[int, list[int]]:
    """Offset of the state byte in a CTA_PROTOINFO value (or -1), and the headers leading to it."""
    for kind, hoff, o, n in attrs(buf, voff, voff + vlen):
        if kind in (1, 3):  # CTA_PROTOINFO_TCP or _SCTP; STATE (1) is a u8 in both
            for inner, ihoff, io, _ in attrs(buf, o, o + n):
                if inner == 1:
                    return io, [hoff, ihoff]
    return -1, []


def walk(buf: bytes, off: int, length: int) -> Message:
    """Decode one conntrack message the slow way, and work out its layout if it has a sliceable one."""
    found = list(attrs(buf, off + 20, off + length))
    top = {kind: (hoff, voff, vlen) for kind, hoff, voff, vlen in found}
    orig, reply, zone, ident = (top.get(k) for k in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE, CTA_ID))
    if orig is None or reply is None or ident is None or ident[2] != 4:
        raise ValueError("conntrack message without tuples or id")
    stamp = top.get(CTA_TIMESTAMP)
    start = _start(buf, stamp[1], stamp[2]) if stamp else -1
    key = b"".join(
        (
            buf[orig[0] : _end(orig)],
            buf[reply[0] : _end(reply)],
            buf[zone[0] : zone[0] + 8] if zone else b"",
            buf[start : start + 8] if start >= 0 else NO_START,
            buf[ident[1] : ident[1] + 4],
        )
    )
    co, cr = top.get(CTA_COUNTERS_ORIG), top.get(CTA_COUNTERS_REPLY)
    blob = counters_blob(
        *(_counter_pair(buf, co[1], co[2]) if co else (0, 0)),
        *(_counter_pair(buf, cr[1], cr[2]) if cr else (0, 0)),
    )
    status, mark, info = top.get(CTA_STATUS), top.get(CTA_MARK), top.get(CTA_PROTOINFO)
    state_at, state_path = _state_at(buf, info[1], info[2]) if info else (-1, [])
    mark_at = mark[1] if mark and mark[2] == 4 else -1
    layout = None
    key_end = zone[0] + 8 if zone else _end(reply)
    if (
        _end(orig) == reply[0]
        and (zone is None or _end(reply) == zone[0])
        and co is not None
        and cr is not None
        and status is not None
        and status[2] == 4
        and _end(co) == cr[0]
        and buf[co[0] : co[0] + 56] == blob
    ):
        inner = [co[1], co[1] + 12, cr[1], cr[1] + 12] + ([start - 4] if start >= 0 else []) + state_path
        layout = _layout(buf, off, [h for _, h, _, _ in found] + inner)
        layout = layout._replace(
            key_start=orig[0] - off,
            key_end=key_end - off,
            id_start=ident[1] - off,
            id_end=ident[1] + 4 - off,
            cnt_start=co[0] - off,
            cnt_end=co[0] + 56 - off,
            dying_at=status[1] + 2 - off,  # be32: IPS_DYING (bit 9) is bit 1 of the third byte
            ts_start=start - off if start >= 0 else 0,
            ts_end=start + 8 - off if start >= 0 else 0,
            ts_pad=b"" if start >= 0 else NO_START,
            mark_at=mark_at - off if mark_at >= 0 else -1,
            state_at=state_at - off if state_at >= 0 else -1,
        )
    return Message(
        key=key,
        counters=blob,
        status=_u(buf, status[1], 4) if status else 0,
        mark=_u(buf, mark_at, 4) if mark_at >= 0 else 0,
        state=buf[state_at] if state_at >= 0 else -1,
        layout=layout,
    )


def _end(attr: tuple[int, int, int]) -> int:
    return attr[1] + ((attr[2] + 3) & ~3)


def _layout(buf: bytes, off: int, headers: list[int]) -> Layout:
    fmt, pos = "=", 0
    for at in sorted(h - off for h in headers):
        fmt += f"{at - pos}xI" if at > pos else "I"
        pos = at + 4
    check = struct.Struct(fmt).unpack_from
    where = tuple(sorted(h - off for h in headers))
    return Layout(check, check(buf, off), 0, 0, 0, 0, 0, 0, 0, 0, 0, b"", -1, -1, where)


def _byte_class(keep: Callable[[int], bool]) -> bytes:
    return b"[" + b"".join(re.escape(bytes([v])) for v in range(256) if keep(v)) + b"]"


_NOT_INTERRUPTED: Final = _byte_class(lambda v: not v & NLM_F_DUMP_INTR)
"""The low byte of nlmsg_flags without NLM_F_DUMP_INTR."""
_NOT_DYING: Final = _byte_class(lambda v: not v & 2)
"""The status byte holding IPS_DYING (``Layout.dying_at``), without it."""


def pattern(size: int, fixed: dict[int, bytes], groups: list[tuple[int, int]]) -> bytes:
    """A regular expression (for ``re.DOTALL``) of exactly ``size`` bytes: at each position of ``fixed``
    the one-byte expression it names (a literal or a class), any byte elsewhere; ``groups`` are the
    ``(start, end)`` spans to capture, in order and disjoint (``start == end``: an empty group)."""
    marks: dict[int, list[bytes]] = {}
    for start, end in groups:
        if start == end:
            marks.setdefault(start, []).append(b"()")
        else:
            marks.setdefault(start, []).append(b"(")
            marks.setdefault(end, []).insert(0, b")")
    out: list[bytes] = []
    run = 0
    for at in range(size + 1):
        one = fixed.get(at) if at < size else None
        if (at in marks or one is not None or at == size) and run:
            out.append(b".{%d}" % run if run > 1 else b".")
            run = 0
        out.extend(marks.get(at, ()))
        if one is not None:
            out.append(one)
        elif at < size:
            run += 1
    return b"".join(out)


def _literal(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    return {at - start: re.escape(buf[at : at + 1]) for at in range(start, end)}


def _branch(buf: bytes, off: int, length: int, layout: Layout) -> bytes | None:
    """The expression matching a CT_NEW message of this shape, not dying, without NLM_F_DUMP_INTR, that
    the layout's check accepts; it captures the key's tuples, the id, the counters and the creation time
    (an empty group when the shape has none), in this order. None: the shape's parts are in another
    order."""
    size = (length + 3) & ~3
    ts = (layout.ts_start, layout.ts_end) if layout.ts_end else (size, size)
    spans = [(layout.key_start, layout.key_end), (layout.id_start, layout.id_end)]
    spans += [(layout.cnt_start, layout.cnt_end), ts]
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)) or ts[1] > size:
        return None
    fixed = _literal(buf[off : off + 4], 0, 4)  # nlmsg_len
    fixed.update({4: re.escape(bytes([CT_NEW & 0xFF])), 5: re.escape(bytes([CT_NEW >> 8]))})
    fixed[6] = _NOT_INTERRUPTED
    fixed[16] = re.escape(buf[off + 16 : off + 17])  # the family
    for at in layout.headers:
        fixed.update((at + i, re.escape(buf[off + at + i : off + at + i + 1])) for i in range(4))
    if layout.dying_at in fixed:
        return None
    fixed[layout.dying_at] = _NOT_DYING
    return pattern(size, fixed, spans)


class Decoder:
    """Decodes buffers of netlink messages, caching one layout per (length, family)."""

    def __init__(self) -> None:
        self._layouts: dict[int, Layout] = {}
        self._branches: dict[int, bytes] = {}
        """Per learned shape, the expression ``columns`` matches it with (``_branch``)."""
        self._scanner: Callable[[bytes, int], Any] | None = None
        self.walked = 0
        """Messages that needed the slow path (a new shape, or one that cannot be sliced)."""
        self.dying = 0
        """Dump entries skipped because they were already dying."""

    def scan(self, buf: bytes, sink: Sink) -> int:
        """Pass ``(key, counters)`` of every conntrack message in ``buf`` to ``sink``; return the flags.

        Dump entries already marked dying are skipped (counted in ``dying``): their DESTROY event was
        sent, and it carries their final counters. The flags are DONE and INTERRUPTED. Raises
        ``OSError`` for a netlink error message and ``ValueError`` for a malformed one.
        """
        get, unpack, flags, off, end = self._layouts.get, _NLMSG.unpack_from, 0, 0, len(buf)
        while off < end:
            if off + 16 > end:
                raise ValueError(f"truncated netlink message at {off} of {end}")
            length, kind, nlflags = unpack(buf, off)
            if length < 20 or off + length > end:
                raise ValueError(f"malformed netlink message (length {length} at {off} of {end})")
            flags |= nlflags
            if kind & 0xFFFD == CT_NEW:  # CT_NEW or CT_DELETE
                layout = get(length << 8 | buf[off + 16])
                if layout is not None:
                    check, expect, ks, ke, i0, i1, c0, c1, dy, t0, t1, pad, _, _, _ = layout
                    if check(buf, off) == expect:
                        if buf[off + dy] & 2 and kind == CT_NEW:  # DYING_BIT
                            self.dying += 1
                        else:
                            sink(
                                (
                                    buf[off + ks : off + ke]
                                    + buf[off + t0 : off + t1]
                                    + pad
                                    + buf[off + i0 : off + i1],
                                    buf[off + c0 : off + c1],
                                )
                            )
                        off += (length + 3) & ~3
                        continue
                self._slow(buf, off, length, kind, sink)
            elif kind == NLMSG_DONE:
                return DONE | (INTERRUPTED if flags & NLM_F_DUMP_INTR else 0)
            elif kind == NLMSG_ERROR:
                _raise_error(buf, off)
            off += (length + 3) & ~3
        return INTERRUPTED if flags & NLM_F_DUMP_INTR else 0

    def columns(self, buf: bytes, keys: list[bytes], cnts: list[bytes]) -> int:
        """``scan`` into two lists (the dump's fast path): each entry's key onto ``keys``, its counters
        onto ``cnts``; the same entries, flags and errors.

        A run of messages of learned shapes is matched by one regular expression, an alternative per
        shape (``_branch``: the same checks as the layout's, plus type, family, not dying, not
        interrupted) that captures the key's parts and the counters; the message where a run stops is
        decoded by ``scan``, which learns its shape if it is new.
        """
        ka, ca, pos, end, flags = keys.append, cnts.append, 0, len(buf), 0
        no_start = NO_START
        while pos < end:
            m = None
            for m in iter((self._scanner or self._compile())(buf, pos).match, None):
                x = m.lastindex
                a, i, c, t = m.group(x - 3, x - 2, x - 1, x)
                ka(a + (t or no_start) + i)
                ca(c)
            if m is not None:
                pos = m.end()
                if pos >= end:
                    break
            length = self._header(buf, pos, end)[0]
            one: list[tuple[bytes, bytes]] = []
            flags |= self.scan(buf[pos : pos + length], one.append)
            for key, cnt in one:
                ka(key)
                ca(cnt)
            if flags & DONE:
                return flags
            pos += (length + 3) & ~3
        return flags

    def _compile(self) -> Callable[[bytes, int], Any]:
        branches = list(self._branches.values())[:MAX_BRANCHES]
        regex = re.compile(b"|".join(b"(?:%s)" % b for b in branches), re.DOTALL) if branches else NEVER
        self._scanner = regex.scanner  # type: ignore[attr-defined]  # match() at pos, then at each match's end: runs of messages
        return self._scanner

    def _slow(self, buf: bytes, off: int, length: int, kind: int, sink: Sink) -> None:
        msg = self._walk(buf, off, length)
        if msg.status & IPS_DYING and kind == CT_NEW:
            self.dying += 1
        else:
            sink((msg.key, msg.counters))

    def entries(self, buf: bytes, out: list[tuple[bytes, bytes, int, int]]) -> int:
        """Append ``(key, counters, mark, state)`` of every conntrack message of ``buf`` (dying ones too)
        to ``out``; return DONE/INTERRUPTED. For the dump tool: the fast path, plus mark and state."""
        get, append, flags, off, end = self._layouts.get, out.append, 0, 0, len(buf)
        while off < end:
            length, kind, nlflags = self._header(buf, off, end)
            flags |= nlflags
            if kind & 0xFFFD == CT_NEW:
                layout = get(length << 8 | buf[off + 16])
                if layout is not None and layout.check(buf, off) == layout.expect:
                    _, _, ks, ke, i0, i1, c0, c1, _, t0, t1, pad, mk, st, _ = layout
                    append(
                        (
                            buf[off + ks : off + ke]
                            + buf[off + t0 : off + t1]
                            + pad
                            + buf[off + i0 : off + i1],
                            buf[off + c0 : off + c1],
                            int.from_bytes(buf[off + mk : off + mk + 4], "big") if mk >= 0 else 0,
                            buf[off + st] if st >= 0 else -1,
                        )
                    )
                else:
                    msg = self._walk(buf, off, length)
                    append((msg.key, msg.counters, msg.mark, msg.state))
            elif kind == NLMSG_DONE:
                return DONE | (INTERRUPTED if flags & NLM_F_DUMP_INTR else 0)
            elif kind == NLMSG_ERROR:
                _raise_error(buf, off)
            off += (length + 3) & ~3
        return INTERRUPTED if flags & NLM_F_DUMP_INTR else 0

    def totals(self, buf: bytes, sums: list[int]) -> int:
        """Add every conntrack message's counters of ``buf`` (dying ones too) to ``sums`` (entries, then
        orig packets, orig bytes, reply packets, reply bytes); return DONE/INTERRUPTED."""
        get, flags, off, end = self._layouts.get, 0, 0, len(buf)
        n = op = ob = rp = rb = 0
        unpack_counters = COUNTERS.unpack_from
        while off < end:
            length, kind, nlflags = self._header(buf, off, end)
            flags |= nlflags
            if kind & 0xFFFD == CT_NEW:
                layout = get(length << 8 | buf[off + 16])
                if layout is not None and layout.check(buf, off) == layout.expect:
                    a, b, c, d = unpack_counters(buf, off + layout.cnt_start)
                else:
                    a, b, c, d = COUNTERS.unpack(self._walk(buf, off, length).counters)
                n, op, ob, rp, rb = n + 1, op + a, ob + b, rp + c, rb + d
            elif kind == NLMSG_DONE:
                flags |= DONE
                break
            elif kind == NLMSG_ERROR:
                _raise_error(buf, off)
            off += (length + 3) & ~3
        for i, v in enumerate((n, op, ob, rp, rb)):
            sums[i] += v
        return (flags & DONE) | (INTERRUPTED if flags & NLM_F_DUMP_INTR else 0)

    @staticmethod
    def _header(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
        if off + 16 > end:
            raise ValueError(f"truncated netlink message at {off} of {end}")
        length, kind, nlflags = _NLMSG.unpack_from(buf, off)
        if length < 20 or off + length > end:
            raise ValueError(f"malformed netlink message (length {length} at {off} of {end})")
        return length, kind, nlflags

    def messages(self, buf: bytes, out: list[Message]) -> int:
        """Append every conntrack message of ``buf``, fully decoded, to ``out``; return DONE/INTERRUPTED.

        For tools and tests: every message takes the slow path.
        """
        flags, off, end = 0, 0, len(buf)
        while off < end:
            if off + 16 > end:
                raise ValueError(f"truncated netlink message at {off} of {end}")
            length, kind, nlflags = _NLMSG.unpack_from(buf, off)
            if length < 20 or off + length > end:
                raise ValueError(f"malformed netlink message (length {length} at {off} of {end})")
            flags |= nlflags
            if kind in (CT_NEW, CT_DELETE):
                out.append(self._walk(buf, off, length))
            elif kind == NLMSG_DONE:
                return DONE | (INTERRUPTED if flags & NLM_F_DUMP_INTR else 0)
            elif kind == NLMSG_ERROR:
                _raise_error(buf, off)
            off += (length + 3) & ~3
        return INTERRUPTED if flags & NLM_F_DUMP_INTR else 0

    def _walk(self, buf: bytes, off: int, length: int) -> Message:
        self.walked += 1
        msg = walk(buf, off, length)
        if msg.layout is not None:
            shape = length << 8 | buf[off + 16]
            self._layouts[shape] = msg.layout
            branch = _branch(buf, off, length, msg.layout)
            if branch is not None and self._branches.get(shape) != branch:
                self._branches[shape] = branch
                self._scanner = None
        return msg


class Slots(NamedTuple):
    """Where one shape's fields are, for a tool that prints every entry (``dump``): offsets from the
    message start. A message that ``fixed`` matches (see ``pattern``) has them there, exactly as
    ``decode_key`` and ``Decoder.entries`` would find them."""

    size: int
    """The message's length, padded to 4 bytes."""
    family: int
    """2 or 10, by the addresses' size (as ``FlowKey.family``)."""
    proto: int
    fixed: dict[int, bytes]
    """One-byte expressions pinning the shape: the length, CT_NEW, no NLM_F_DUMP_INTR, the family, every
    attribute header the layout checks and every one inside both tuples, and the protocol number."""
    at: dict[str, int]
    """``orig_src``, ``orig_dst``, ``orig_sport``, ``orig_dport``, the same for ``reply``, ``id``,
    ``orig_packets``, ``orig_bytes``, ``reply_packets``, ``reply_bytes``; ``zone``, ``mark`` and
    ``state`` are -1 when the shape has none (0, 0 and no state are printed then)."""


def slots(buf: bytes, off: int, length: int) -> Slots | None:
    """The slots of the message at ``off``'s shape, or None when a tool must decode it another way
    (no layout, no ports, a zone inside a tuple, mixed address sizes...)."""
    layout = walk(buf, off, length).layout
    if layout is None or buf[off + 4 : off + 6] != CT_NEW.to_bytes(2, "little"):
        return None
    headers = set(layout.headers)
    at: dict[str, int] = {}
    sizes: dict[str, int] = {}
    top = {kind: (voff, vlen) for kind, _, voff, vlen in attrs(buf, off + 20, off + length)}
    for side, kind in (("orig", CTA_TUPLE_ORIG), ("reply", CTA_TUPLE_REPLY)):
        voff, vlen = top[kind]
        for inner, ihoff, io, isz in attrs(buf, voff, voff + vlen):
            headers.add(ihoff - off)
            if inner == 3:  # CTA_TUPLE_ZONE: decode_key may take the zone from here
                return None
            for leaf, lhoff, lo, lsz in attrs(buf, io, io + isz) if inner in (1, 2) else ():
                headers.add(lhoff - off)
                name = _TUPLE_LEAVES.get((inner, leaf)) if lsz == 2 or inner == 1 or leaf == 1 else None
                if name:  # the last one wins, as in decode_key
                    at[f"{side}_{name}"], sizes[f"{side}_{name}"] = lo - off, lsz
    if not all(name in at for name in (*_SLICED, "orig_proto")) or sizes["orig_proto"] != 1:
        return None
    size = {sizes[n] for n in ("orig_src", "orig_dst", "reply_src", "reply_dst")}
    zone = top.get(CTA_ZONE)
    if len(size) != 1 or not size <= {4, 16} or (zone and zone[1] != 2):
        return None
    at.update(
        id=layout.id_start,
        zone=zone[0] - off if zone else -1,
        mark=layout.mark_at,
        state=layout.state_at,
        orig_packets=layout.cnt_start + 8,
        orig_bytes=layout.cnt_start + 20,
        reply_packets=layout.cnt_start + 36,
        reply_bytes=layout.cnt_start + 48,
    )
    fixed = _literal(buf[off : off + 4], 0, 4)
    fixed.update({4: re.escape(bytes([CT_NEW & 0xFF])), 5: re.escape(bytes([CT_NEW >> 8]))})
    fixed[6] = _NOT_INTERRUPTED
    fixed[16] = re.escape(buf[off + 16 : off + 17])
    for where in headers:
        fixed.update((where + i, re.escape(buf[off + where + i : off + where + i + 1])) for i in range(4))
    proto_at = at.pop("orig_proto")
    at.pop("reply_proto", None)
    fixed[proto_at] = re.escape(buf[off + proto_at : off + proto_at + 1])
    (addr,) = size
    return Slots((length + 3) & ~3, 2 if addr == 4 else 10, buf[off + proto_at], fixed, at)


_TUPLE_LEAVES: Final = {
    (1, 1): "src", (1, 3): "src", (1, 2): "dst", (1, 4): "dst",
    (2, 1): "proto", (2, 2): "sport", (2, 3): "dport",
}  # fmt: skip
"""(tuple nest, attribute) -> field, as ``_tuple`` reads them (addresses and the protocol of any size, ports
of 2 bytes)."""


def message_length(buf: bytes, off: int, end: int) -> int:
    """The length of the netlink message at ``off`` (ValueError: truncated or malformed)."""
    return Decoder._header(buf, off, end)[0]


def _raise_error(buf: bytes, off: int) -> None:
    code = -int.from_bytes(buf[off + 16 : off + 20], "little", signed=True)
    if code:
        raise OSError(code, f"ctnetlink: {os.strerror(code)}")


class FlowKey(FlowTuple):
    """The fields of a key: the flow tuple (``schema.FlowTuple``, RAW order), then the conntrack instance."""

    __slots__ = ()
    id: int
    start: int
    """Creation time, ns since the epoch (CTA_TIMESTAMP_START); 0 when the kernel did not record it."""


def _tuple(key: bytes, voff: int, vlen: int) -> tuple[bytes, bytes, int, int, int, int]:
    """``(src, dst, sport, dport, proto, tuple zone)`` of a CTA_TUPLE_* value."""
    src = dst = b""
    sport = dport = proto = zone = 0
    for kind, _, o, n in attrs(key, voff, voff + vlen):
        if kind == 1:  # CTA_TUPLE_IP
            for ip, _, io, isz in attrs(key, o, o + n):
                if ip in (1, 3):
                    src = key[io : io + isz]
                elif ip in (2, 4):
                    dst = key[io : io + isz]
        elif kind == 2:  # CTA_TUPLE_PROTO
            for p, _, po, psz in attrs(key, o, o + n):
                if p == 1:
                    proto = key[po]
                elif p == 2 and psz == 2:
                    sport = _u(key, po, 2)
                elif p == 3 and psz == 2:
                    dport = _u(key, po, 2)
        elif kind == 3 and n == 2:  # CTA_TUPLE_ZONE
            zone = _u(key, o, 2)
    return src, dst, sport, dport, proto, zone


def decode_key(key: bytes) -> FlowKey:
    """The fields of a key made by ``scan`` or ``walk``; raises ValueError if it is not one."""
    orig = reply = None
    zone = 0
    for kind, _, o, n in attrs(key, 0, len(key) - INSTANCE):
        if kind == CTA_TUPLE_ORIG:
            orig = _tuple(key, o, n)
        elif kind == CTA_TUPLE_REPLY:
            reply = _tuple(key, o, n)
        elif kind == CTA_ZONE and n == 2:
            zone = _u(key, o, 2)
    if orig is None or reply is None or len(orig[0]) not in (4, 16):
        raise ValueError("not a conntrack key")
    return FlowKey(  # positional (twice as fast as by keyword), in FlowTuple order: proto, family, zone, ...
        orig[4],
        2 if len(orig[0]) == 4 else 10,
        zone or orig[5],
        *orig[:4],  # orig src, dst, sport, dport
        *reply[:4],
        _u(key, len(key) - 4, 4),  # id
        _u(key, len(key) - INSTANCE, 8),  # start
    )


class KeyReader:
    """``decode_key`` for many keys: the first key of each length is walked, and where its fields are is
    kept with a check of every attribute header; a later key of that length that passes the check is
    sliced at those offsets (else walked again). For the dump tool."""

    def __init__(self) -> None:
        self._shapes: dict[
            int, tuple[Callable[[bytes, int], tuple[int, ...]], tuple[int, ...], tuple[int, ...]]
        ] = {}

    def fields(self, key: bytes) -> FlowKey:
        shape = self._shapes.get(len(key))
        if shape is not None:
            check, expect, at = shape
            if check(key, 0) == expect:
                return _sliced(key, at)
        f = decode_key(key)
        self._learn(key, f)
        return f

    def _learn(self, key: bytes, f: FlowKey) -> None:
        headers: list[int] = []
        found: dict[str, int] = {}
        for kind, hoff, o, n in attrs(key, 0, len(key) - INSTANCE):
            headers.append(hoff)
            side = "orig" if kind == CTA_TUPLE_ORIG else "reply" if kind == CTA_TUPLE_REPLY else ""
            if kind == CTA_ZONE and n == 2:
                found["zone"] = o
            if not side:
                continue
            for inner, ihoff, io, isz in attrs(key, o, o + n):
                headers.append(ihoff)
                if inner == 3:  # CTA_TUPLE_ZONE: the zone may come from here; leave it to decode_key
                    return
                for leaf, lhoff, lo, lsz in attrs(key, io, io + isz) if inner in (1, 2) else ():
                    headers.append(lhoff)
                    name = _LEAVES.get((inner, leaf, lsz))
                    if name:
                        found[f"{side}_{name}"] = lo
        if not all(name in found for name in _SLICED) or len(f.orig_src) not in (4, 16):
            return  # a portless protocol or an odd shape: always walked
        check = _header_check(headers)
        at = (*(found[name] for name in _SLICED), len(f.orig_src), found["orig_proto"], found.get("zone", -1))
        self._shapes[len(key)] = (check, check(key, 0), at)


_LEAVES: Final = {
    (1, 1, 4): "src", (1, 2, 4): "dst", (1, 3, 16): "src", (1, 4, 16): "dst",
    (2, 2, 2): "sport", (2, 3, 2): "dport", (2, 1, 1): "proto",
}  # fmt: skip
"""(tuple nest, attribute, value length) -> field: CTA_TUPLE_IP's V4/V6 SRC/DST, CTA_TUPLE_PROTO's ports."""
_SLICED: Final = (
    "orig_src", "orig_dst", "reply_src", "reply_dst",
    "orig_sport", "orig_dport", "reply_sport", "reply_dport",
)  # fmt: skip


def _header_check(headers: list[int]) -> Callable[[bytes, int], tuple[int, ...]]:
    fmt, pos = "=", 0
    for at in sorted(headers):
        fmt += f"{at - pos}xI" if at > pos else "I"
        pos = at + 4
    return struct.Struct(fmt).unpack_from


def _sliced(key: bytes, at: tuple[int, ...]) -> FlowKey:
    os_, od, rs, rd, osp, odp, rsp, rdp, size, proto_at, zone_at = at
    end = len(key)
    return FlowKey(  # positional, in FlowTuple order: proto, family, zone, orig tuple, reply tuple, id, start
        key[proto_at],
        2 if size == 4 else 10,
        int.from_bytes(key[zone_at : zone_at + 2], "big") if zone_at >= 0 else 0,
        key[os_ : os_ + size],
        key[od : od + size],
        int.from_bytes(key[osp : osp + 2], "big"),
        int.from_bytes(key[odp : odp + 2], "big"),
        key[rs : rs + size],
        key[rd : rd + size],
        int.from_bytes(key[rsp : rsp + 2], "big"),
        int.from_bytes(key[rdp : rdp + 2], "big"),
        int.from_bytes(key[end - 4 :], "big"),
        int.from_bytes(key[end - INSTANCE : end - 4], "big"),
    )


def row_key(key: bytes) -> bytes:
    """The key without its instance suffix: (zone, proto, both tuples), the identity of a reported row."""
    return key[:-INSTANCE]
