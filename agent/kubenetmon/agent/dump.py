"""``kubenetmon conntrack dump``: the agent's conntrack reader as a debugging tool.

Prints every entry of a namespace's table as the agent decodes it (text like ``conntrack -L -o extended``,
or one JSON object per line), or with ``--summary`` one JSON object of totals after decoding every entry.
It never zeroes or changes anything in the table.

Why it is built for speed: it is run on a node with a table of hundreds of thousands of entries, where it
must not take much longer than conntrack-tools. It reads with the agent's fast decoder (per-shape layouts,
see ``ctnetlink``), slices key fields at cached offsets (``KeyReader``), caches address strings, formats
each entry with one f-string and writes a kernel batch at a time; ``--summary`` only adds counters.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kubenetmon.agent.ctnetlink import FlowKey, KeyReader, Message, counters, decode_key
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


def main(args: argparse.Namespace) -> int:
    from kubenetmon.agent.conntrack import open_conntrack  # not the agent's CLI: nothing it needs

    conntrack = open_conntrack(args.netns, events=False)
    out = sys.stdout
    try:
        if args.summary:
            sums = conntrack.dump_totals()
            out.write(json.dumps(dict(zip(("entries", *TOTALS), sums, strict=True))) + "\n")
        else:
            lines, write = formatter(args.format), out.write

            def consume(batch: list[Entry]) -> None:
                write(lines(batch))

            conntrack.dump_entries(consume)
        out.flush()
    except BrokenPipeError:  # the reader went away (``| head``): not an error
        sys.stdout = None  # no second failure at interpreter exit
    finally:
        conntrack.close()
    return exits.DONE
