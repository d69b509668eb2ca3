"""``kubenetmon conntrack dump``: the agent's conntrack reader as a debugging tool.

Prints every entry of a namespace's table as the agent decodes it (text like ``conntrack -L -o extended``,
or one JSON object per line), or with ``--summary`` one JSON object of totals after decoding every entry.
It never zeroes or changes anything in the table.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any, Final

from kubenetmon.agent.ctnetlink import Message, counters, decode_key

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


def configure(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="conntrack_command", metavar="COMMAND", required=True)
    dump = subs.add_parser(
        "dump", help="print the conntrack table as the agent reads it (counters untouched)"
    )
    dump.add_argument("--netns", default="", help="named network namespace to read (default: own)")
    dump.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    dump.add_argument("--summary", action="store_true", help="print only totals, as one JSON object")


def entry(msg: Message) -> dict[str, Any]:
    """One entry as the JSON object ``dump --format json`` prints."""
    f = decode_key(msg.key)
    opk, oby, rpk, rby = counters(msg.counters)
    names = _TCP if f.proto == 6 else _SCTP if f.proto == 132 else []
    state = names[msg.state] if 0 <= msg.state < len(names) else ""
    ip = ipaddress.ip_address
    return {
        "id": f.id,
        "zone": f.zone,
        "proto": _PROTOS.get(f.proto, str(f.proto)),
        "family": "ipv4" if f.family == 2 else "ipv6",
        "orig_src": str(ip(f.orig_src)),
        "orig_dst": str(ip(f.orig_dst)),
        "orig_sport": f.orig_sport,
        "orig_dport": f.orig_dport,
        "reply_src": str(ip(f.reply_src)),
        "reply_dst": str(ip(f.reply_dst)),
        "reply_sport": f.reply_sport,
        "reply_dport": f.reply_dport,
        "orig_packets": opk,
        "orig_bytes": oby,
        "reply_packets": rpk,
        "reply_bytes": rby,
        "state": state,
        "mark": msg.mark,
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


def main(args: argparse.Namespace) -> int:
    from kubenetmon.agent.cli import open_conntrack

    conntrack = open_conntrack(args.netns, events=False)
    totals = dict.fromkeys(("entries", *TOTALS), 0)
    out = sys.stdout

    def consume(batch: list[Message]) -> None:
        for msg in batch:
            e = entry(msg)
            if args.summary:
                totals["entries"] += 1
                for name in TOTALS:
                    totals[name] += e[name]
            else:
                out.write((json.dumps(e) if args.format == "json" else text(e)) + "\n")

    try:
        conntrack.dump_messages(consume)
        if args.summary:
            out.write(json.dumps(totals) + "\n")
        out.flush()
    except BrokenPipeError:  # the reader went away (``| head``): not an error
        sys.stdout = None  # no second failure at interpreter exit
    finally:
        conntrack.close()
    return 0
