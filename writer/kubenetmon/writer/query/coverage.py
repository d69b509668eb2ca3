"""Source coverage: did conntrack see the node's traffic? Per node and interval, from the ledger.

Each report carries the bytes its node's external interfaces counted in its span (``link_bytes``) and
the bytes it metered for flows crossing the node boundary (``boundary_bytes``). Their ratio, the
*coverage*, is near 1 when conntrack sees the node's traffic. A node-interval is **blind** when its
coverage is under the threshold (default 0.5) while at least ``min_bytes`` crossed its interfaces: traffic
bypassed conntrack (a NOTRACK rule, eBPF host routing, hardware offload) and is not metered.

Known overheads keep a fully seen node a little under 1: interfaces count link-layer frames (14 bytes of
Ethernet header per packet that conntrack's IP-level counters lack), and traffic that never makes a
conntrack entry of its own (ARP, neighbour discovery, dropped or invalid packets). Encapsulation goes the
other way: an overlay's inner flow and its outer tunnel flow are both tracked, so a node whose pods talk
over VXLAN or IP-in-IP can show up to about 2. Only the lower bound is judged. Pure: verdicts in, verdicts
and one line out; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kubenetmon.writer.query.completeness import Verdict, _hhmm

THRESHOLD: Final = 0.5
MIN_BYTES: Final = 1_000_000


def blind(
    verdicts: Sequence[Verdict], *, threshold: float = THRESHOLD, min_bytes: int = MIN_BYTES
) -> list[Verdict]:
    """The node-intervals whose coverage is under ``threshold`` with at least ``min_bytes`` on the link."""
    return [
        v for v in verdicts if v.link_bytes >= min_bytes and v.coverage is not None and v.coverage < threshold
    ]


def per_node(verdicts: Sequence[Verdict]) -> dict[str, tuple[int, int, int]]:
    """Node -> (intervals measured, link bytes, boundary bytes) over the window."""
    out: dict[str, tuple[int, int, int]] = {}
    for v in verdicts:
        if v.link_bytes < 0:
            continue
        n, link, bound = out.get(v.node, (0, 0, 0))
        out[v.node] = (n + 1, link + v.link_bytes, bound + v.boundary_bytes)
    return out


def summary(verdicts: Sequence[Verdict], *, threshold: float = THRESHOLD, min_bytes: int = MIN_BYTES) -> str:
    """One line: "coverage 0.98 over 1,440 node-intervals; node-7 blind (coverage 0.02) 04:10-04:12"."""
    nodes = per_node(verdicts)
    measured = sum(n for n, _, _ in nodes.values())
    if not measured:
        return "coverage not measured (agents without link statistics)"
    link = sum(v for _, v, _ in nodes.values())
    bound = sum(v for _, _, v in nodes.values())
    ratio = f"{bound / link:.2f}" if link else "-"
    line = f"coverage {ratio} over {measured:,} node-intervals"
    found = blind(verdicts, threshold=threshold, min_bytes=min_bytes)
    if found:
        runs: list[list[Verdict]] = []
        for v in found:
            if runs and runs[-1][-1].node == v.node and runs[-1][-1].start + v.seconds == v.start:
                runs[-1].append(v)
            else:
                runs.append([v])
        parts = []
        for run in runs[:5]:
            lo, hi = run[0].start, run[-1].start + run[-1].seconds
            seen = sum(v.boundary_bytes for v in run) / max(1, sum(v.link_bytes for v in run))
            parts.append(f"{run[0].node} blind (coverage {seen:.2f}) {_hhmm(lo)}\N{EN DASH}{_hhmm(hi)}")
        more = len(runs) - 5
        line += "; " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")
    return line
