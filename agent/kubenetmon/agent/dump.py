"""``kubenetmon conntrack dump``: the agent's conntrack reader as a debugging tool.

Prints every entry of a namespace's table as the agent decodes it (text like ``conntrack -L -o extended``,
or one JSON object per line), or with ``--summary`` one JSON object of totals after decoding every entry.
It never zeroes or changes anything in the table.

Why it is built for speed: it is run on a node with a table of hundreds of thousands of entries, where it
must not take much longer than conntrack-tools. ``Printer`` matches runs of messages of learned shapes with
one regular expression and prints each entry with one ``struct`` unpack and one ``%`` format of a
per-shape template; the first message of a shape goes through the agent's decoder (per-shape layouts, see
``ctnetlink``), ``KeyReader`` (key fields sliced at cached offsets) and ``formatter``, which are the
reference the fast path is tested against. It writes a kernel batch at a time; ``--summary`` only adds
counters.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from operator import call, itemgetter
from typing import Any, Final

from kubenetmon.agent.ctnetlink import (
    DONE,
    NEVER,
    Decoder,
    FlowKey,
    KeyReader,
    Message,
    Slots,
    counters,
    decode_key,
    message_length,
    pattern,
    slots,
)
from kubenetmon.shared import exits
from kubenetmon.shared.options import add_arguments, option

_PROTOS: Final = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    33: "dccp",
    47: "gre",
    58: "icmpv6",
    132: "sctp",
    136: "udplite",
}
_TCP: Final = (
    "NONE SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2".split()
)
_SCTP: Final = (
    "NONE CLOSED COOKIE_WAIT COOKIE_ECHOED ESTABLISHED SHUTDOWN_SENT SHUTDOWN_RECD SHUTDOWN_ACK_SENT "
    "HEARTBEAT_SENT HEARTBEAT_ACKED".split()
)
TOTALS: Final = ("orig_packets", "orig_bytes", "reply_packets", "reply_bytes")
Entry = tuple[bytes, bytes, int, int]
"""``(key, counters, mark, state)`` as ``Decoder.entries`` makes them."""


@dataclass(frozen=True)
class DumpFlags:
    """The flags of ``conntrack dump``."""

    netns: str = option(
        "", flag="--netns", metavar="NAME", native=True, help="named network namespace to read (default: own)"
    )
    format: str = option("text", flag="--format", native=True, choices=("text", "json"), help="output format")
    summary: bool = option(
        False, flag="--summary", kind="switch", help="print only totals, as one JSON object"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="conntrack_command", metavar="COMMAND", required=True)
    dump = subs.add_parser(
        "dump", help="print the conntrack table as the agent reads it (counters untouched)"
    )
    add_arguments(dump, DumpFlags, title=None)


def _state_name(proto: int, state: int) -> str:
    names = _TCP if proto == 6 else _SCTP if proto == 132 else []
    return names[state] if 0 <= state < len(names) else ""


class _Addresses(dict[bytes, str]):
    """Raw address -> text, computed once per address."""

    def __missing__(self, raw: bytes) -> str:
        text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        self[raw] = text
        return text


def entry(msg: Message) -> dict[str, Any]:
    """One entry as the JSON object ``dump --format json`` prints."""
    return _fields(decode_key(msg.key), msg.counters, msg.mark, msg.state, _Addresses())


def _fields(f: FlowKey, blob: bytes, mark: int, state: int, ip: _Addresses) -> dict[str, Any]:
    opk, oby, rpk, rby = counters(blob)
    return {
        "id": f.id,
        "zone": f.zone,
        "proto": _PROTOS.get(f.proto, str(f.proto)),
        "family": "ipv4" if f.family == 2 else "ipv6",
        "orig_src": ip[f.orig_src],
        "orig_dst": ip[f.orig_dst],
        "orig_sport": f.orig_sport,
        "orig_dport": f.orig_dport,
        "reply_src": ip[f.reply_src],
        "reply_dst": ip[f.reply_dst],
        "reply_sport": f.reply_sport,
        "reply_dport": f.reply_dport,
        "orig_packets": opk,
        "orig_bytes": oby,
        "reply_packets": rpk,
        "reply_bytes": rby,
        "state": _state_name(f.proto, state),
        "mark": mark,
    }


def text(e: dict[str, Any]) -> str:
    """A line in the spirit of ``conntrack -L -o extended``."""
    tuples = " ".join(
        f"src={e[f'{d}_src']} dst={e[f'{d}_dst']} sport={e[f'{d}_sport']} dport={e[f'{d}_dport']} "
        f"packets={e[f'{d}_packets']} bytes={e[f'{d}_bytes']}"
        for d in ("orig", "reply")
    )
    state = f" {e['state']}" if e["state"] else ""
    return f"{e['family']} {e['proto']}{state} {tuples} mark={e['mark']} zone={e['zone']} id={e['id']}"


def formatter(fmt: str) -> Callable[[list[Entry]], str]:
    """Lines (each ending in a newline) of a batch of entries; equal to ``text(entry)`` or
    ``json.dumps(entry)`` per entry, but without building a dict per entry."""
    keys, ip, unpack = KeyReader(), _Addresses(), counters
    protos = {p: _PROTOS.get(p, str(p)) for p in range(256)}
    states = {(p, s): _state_name(p, s) for p in (6, 132) for s in range(-1, 256)}

    def as_text(batch: list[Entry]) -> str:
        lines = []
        for key, blob, mark, state in batch:
            f = keys.fields(key)
            opk, oby, rpk, rby = unpack(blob)
            st = states.get((f.proto, state), "")
            lines.append(
                f"{'ipv4' if f.family == 2 else 'ipv6'} {protos[f.proto]}{' ' if st else ''}{st} "
                f"src={ip[f.orig_src]} dst={ip[f.orig_dst]} sport={f.orig_sport} dport={f.orig_dport} "
                f"packets={opk} bytes={oby} "
                f"src={ip[f.reply_src]} dst={ip[f.reply_dst]} sport={f.reply_sport} dport={f.reply_dport} "
                f"packets={rpk} bytes={rby} mark={mark} zone={f.zone} id={f.id}\n"
            )
        return "".join(lines)

    def as_json(batch: list[Entry]) -> str:
        lines = []
        for key, blob, mark, state in batch:
            f = keys.fields(key)
            opk, oby, rpk, rby = unpack(blob)
            lines.append(
                f'{{"id": {f.id}, "zone": {f.zone}, "proto": {json.dumps(protos[f.proto])}, '
                f'"family": "{"ipv4" if f.family == 2 else "ipv6"}", '
                f'"orig_src": "{ip[f.orig_src]}", "orig_dst": "{ip[f.orig_dst]}", '
                f'"orig_sport": {f.orig_sport}, "orig_dport": {f.orig_dport}, '
                f'"reply_src": "{ip[f.reply_src]}", "reply_dst": "{ip[f.reply_dst]}", '
                f'"reply_sport": {f.reply_sport}, "reply_dport": {f.reply_dport}, '
                f'"orig_packets": {opk}, "orig_bytes": {oby}, "reply_packets": {rpk}, "reply_bytes": {rby}, '
                f'"state": "{states.get((f.proto, state), "")}", "mark": {mark}}}\n'
            )
        return "".join(lines)

    return as_json if fmt == "json" else as_text


_FIELDS: Final = (
    "orig_src", "orig_dst", "orig_sport", "orig_dport", "reply_src", "reply_dst", "reply_sport",
    "reply_dport", "orig_packets", "orig_bytes", "reply_packets", "reply_bytes", "mark", "zone", "id",
)  # fmt: skip
_CODES: Final = {
    "sport": "H",
    "dport": "H",
    "packets": "Q",
    "bytes": "Q",
    "mark": "I",
    "zone": "H",
    "id": "I",
}
MAX_SHAPES: Final = 32
"""Shapes printed by ``Printer``'s expression; later ones are printed through ``formatter``."""


class Printer:
    """``formatter``'s lines for whole kernel batches, byte for byte, without decoding keys.

    The first message of each shape is printed through ``Decoder.entries`` and ``formatter``, and its
    ``ctnetlink.Slots`` (where every field is) become one alternative of a regular expression, with a
    group per protocol state for TCP and SCTP (the state's name is then part of the line's template). A
    run of messages the expression matches is printed with one ``struct`` unpack and one ``%`` format
    per entry (IPv4 addresses as four numbers, IPv6 ones through a cache); where a run stops, the
    message is printed the first way. The expression checks every attribute header the fields depend on.
    """

    def __init__(self, fmt: str) -> None:
        self.decoder = Decoder()
        self.lines = formatter(fmt)
        self.json = fmt == "json"
        self.branches: list[bytes] = []
        self.handlers: list[Handler] = [("", tuple, tuple, ())]  # group 0 is the whole match
        """Per group of the expression: template, unpack, the fields in the template's order, converters
        (IPv6 addresses)."""
        self.tried: dict[int, int] = {}
        """(length, family) -> how often a message of it was looked at (a few times at most)."""
        self.scanner: Callable[[bytes, int], Any] | None = None
        self.ip = _Addresses()

    def __call__(self, buf: bytes) -> tuple[str, int, int]:
        """The lines of a kernel batch, how many, and ``Decoder.entries``' flags (DONE, INTERRUPTED)."""
        lines: list[str] = []
        add, pos, end, flags, handlers = lines.append, 0, len(buf), 0, self.handlers
        while pos < end:
            m = None
            for m in iter((self.scanner or self._compile())(buf, pos).match, None):
                template, unpack, pick, convert = handlers[m.lastindex]
                if convert:
                    add(template % tuple(map(call, convert, pick(unpack(buf, m.start())))))
                else:
                    add(template % pick(unpack(buf, m.start())))
            if m is not None:
                pos = m.end()
                if pos >= end:
                    break
            length = message_length(buf, pos, end)
            batch: list[Entry] = []
            flags |= self.decoder.entries(buf[pos : pos + length], batch)
            if batch:
                add(self.lines(batch))
                self._learn(buf, pos, length)
            if flags & DONE:
                break
            pos += (length + 3) & ~3
        return "".join(lines), len(lines), flags

    def _learn(self, buf: bytes, off: int, length: int) -> None:
        shape = length << 8 | buf[off + 16]
        if self.tried.get(shape, 0) >= 4 or len(self.branches) >= MAX_SHAPES:
            return
        self.tried[shape] = self.tried.get(shape, 0) + 1
        found = slots(buf, off, length)
        if found is None:
            return
        branch, handlers = self._branch(found)
        if branch not in self.branches:
            self.branches.append(branch)
            self.handlers.extend(handlers)
            self.scanner = None

    def _branch(self, s: Slots) -> tuple[bytes, list[Handler]]:
        """A shape's expression (a group per state name, or one group) and a handler per group."""
        fields = sorted((s.at[f], f) for f in _FIELDS if s.at[f] >= 0)
        fmt, pos, order = ">", 0, []
        for where, name in fields:
            if where < pos:
                raise ValueError(f"overlapping fields in a shape: {fields}")
            fmt += f"{where - pos}x" if where > pos else ""
            if name.endswith(("_src", "_dst")):
                fmt += "BBBB" if s.family == 2 else "16s"
                order += [name] * (4 if s.family == 2 else 1)
                pos = where + (4 if s.family == 2 else 16)
            else:
                code = _CODES[name.rsplit("_", 1)[-1]]
                fmt += code
                order.append(name)
                pos = where + struct.calcsize(">" + code)
        picked = [
            i for f in (_FIELDS_JSON if self.json else _FIELDS_TEXT) for i, o in enumerate(order) if o == f
        ]
        pick = itemgetter(*picked)
        convert: tuple[Callable[[Any], Any], ...] = ()
        if s.family != 2:
            ip = self.ip.__getitem__
            convert = tuple(ip if order[i].endswith(("_src", "_dst")) else _same for i in picked)
        unpack = struct.Struct(fmt).unpack_from
        proto = _PROTOS.get(s.proto, str(s.proto))
        names = _state_names(s.proto) if s.at["state"] >= 0 else []
        states = (
            [(re.escape(bytes([v])), name) for v, name in enumerate(names)] + [(b".", "")] if names else []
        )
        handlers: list[Handler] = [
            (self._template(s, proto, name), unpack, pick, convert) for _, name in states or [(b"", "")]
        ]
        if not states:
            return pattern(s.size, s.fixed, [(s.size, s.size)]), handlers
        st = s.at["state"]
        head = pattern(st, {k: v for k, v in s.fixed.items() if k < st}, [])
        tail = pattern(s.size - st - 1, {k - st - 1: v for k, v in s.fixed.items() if k > st}, [])
        return head + b"(?:" + b"|".join(b + b"()" for b, _ in states) + b")" + tail, handlers

    def _template(self, s: Slots, proto: str, state: str) -> str:
        family = "ipv4" if s.family == 2 else "ipv6"
        addr = "%d.%d.%d.%d" if s.family == 2 else "%s"
        mark = "%d" if s.at["mark"] >= 0 else "0"
        zone = "%d" if s.at["zone"] >= 0 else "0"
        if self.json:
            return (
                f'{{"id": %d, "zone": {zone}, "proto": {json.dumps(proto)}, "family": "{family}", '
                f'"orig_src": "{addr}", "orig_dst": "{addr}", "orig_sport": %d, "orig_dport": %d, '
                f'"reply_src": "{addr}", "reply_dst": "{addr}", "reply_sport": %d, "reply_dport": %d, '
                f'"orig_packets": %d, "orig_bytes": %d, "reply_packets": %d, "reply_bytes": %d, '
                f'"state": "{state}", "mark": {mark}}}\n'
            )
        return (
            f"{family} {proto}{' ' if state else ''}{state} src={addr} dst={addr} sport=%d dport=%d "
            f"packets=%d bytes=%d src={addr} dst={addr} sport=%d dport=%d packets=%d bytes=%d "
            f"mark={mark} zone={zone} id=%d\n"
        )

    def _compile(self) -> Callable[[bytes, int], Any]:
        regex = (
            re.compile(b"|".join(b"(?:%s)" % b for b in self.branches), re.DOTALL) if self.branches else NEVER
        )
        self.scanner = regex.scanner  # type: ignore[attr-defined]
        return self.scanner


Handler = tuple[str, Callable[..., tuple[Any, ...]], Callable[..., Any], tuple[Callable[[Any], Any], ...]]
_FIELDS_TEXT: Final = (
    "orig_src", "orig_dst", "orig_sport", "orig_dport", "orig_packets", "orig_bytes", "reply_src",
    "reply_dst", "reply_sport", "reply_dport", "reply_packets", "reply_bytes", "mark", "zone", "id",
)  # fmt: skip
_FIELDS_JSON: Final = (
    "id", "zone", "orig_src", "orig_dst", "orig_sport", "orig_dport", "reply_src", "reply_dst",
    "reply_sport", "reply_dport", "orig_packets", "orig_bytes", "reply_packets", "reply_bytes", "mark",
)  # fmt: skip


def _same(value: Any) -> Any:
    return value


def _state_names(proto: int) -> list[str]:
    return _TCP if proto == 6 else _SCTP if proto == 132 else []


def main(args: argparse.Namespace) -> int:
    from kubenetmon.agent.conntrack import open_conntrack  # not the agent's CLI: nothing it needs

    conntrack = open_conntrack(args.netns, events=False)
    out = sys.stdout
    try:
        if args.summary:
            sums = conntrack.dump_totals()
            out.write(json.dumps(dict(zip(("entries", *TOTALS), sums, strict=True))) + "\n")
        else:
            printer, write = Printer(args.format), out.write

            def consume(buf: bytes) -> tuple[int, int]:
                text, entries, flags = printer(buf)
                write(text)
                return entries, flags

            conntrack.dump_raw(consume)
        out.flush()
    except BrokenPipeError:  # the reader went away (``| head``): not an error
        sys.stdout = None  # no second failure at interpreter exit
    finally:
        conntrack.close()
    return exits.DONE
