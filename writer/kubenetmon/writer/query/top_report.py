"""The pure core of ``kubenetmon top``: the query it runs, the report it reads back, and how it looks.

``build_query`` turns a ``TopSpec`` and a clock reading into one SQL statement over the exact view:
rows of one direction whose interval started within the window, grouped by the chosen dimensions, sorted
by bytes (ties broken by name, so the order is stable), with the window's span and totals computed over
*all* groups by window functions so that ``--limit`` never changes them. ``parse_report`` reads the answer
back; ``render`` prints it as an aligned table, JSON or CSV; ``rich_table`` is the terminal version.

Pure: no I/O besides writing to the stream it is given, no clock (callers pass ``now``), no client.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any, Final, TextIO

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubenetmon.shared.timespec import format_time
from kubenetmon.shared.units import csv_cell, human_bytes, usd
from kubenetmon.writer.flow_tables import fqn
from kubenetmon.writer.sink import QueryResult

BY: Final = ("app", "pod", "namespace", "class", "zone", "service", "domain")
DIRECTIONS: Final = ("out", "in")
FORMATS: Final = ("table", "json", "csv")
_CLASS_STYLE: Final = {
    "PUBLIC_INTERNET": "bold red",
    "INTER_REGION": "magenta",
    "INTRA_REGION": "yellow",
    "INTRA_VPC": "green",
    "UNKNOWN": "dim",
}


@dataclass(frozen=True)
class TopSpec:
    """What to report: grouping, direction, window (seconds back from now), rows shown, where."""

    by: str = "app"
    direction: str = "out"
    since_s: float = 600.0
    limit: int = 20
    database: str = "kubenetmon"
    view: str = "network_flows_0_exact"
    cost: bool = False
    """Also sum ``costUSD``: then ``view`` must be the cost view (``<table>_cost``)."""
    nodes_view: str = ""
    """The node rows' view (the same kind as ``view``, over ``<table>_node``), read with the pod rows:
    a node's own traffic is its own line, ``node:<name>`` (or ``node:<name>/<pod>`` when the pod owning
    the socket is known); empty: pod rows only."""


def _ip(side: str) -> str:
    return f"if(ipFamily = 4, toString({side}IPv4), toString({side}IP))"


def _outside(side: str, *, collapse: bool) -> str:
    """An endpoint that is not a pod: its cloud service if known, else its address (or one bucket)."""
    last = "'(outside)'" if collapse else _ip(side)
    if side == "local":  # the local side is a pod by the labeling rules; an address if ever not
        return last
    return f"if(remoteCloudService != '', concat(remoteCloud, ':', remoteCloudService), {last})"


def _name(side: str, by: str, *, nodes: bool = False) -> str:
    """SQL naming one endpoint at the granularity of ``by`` (with ``nodes``, a node row's local side is
    its node)."""
    name = _pod_name(side, by)
    if side != "local" or not nodes:
        return name
    owner = f"if(localPod != '', concat('/', {name}), '')"
    return f"if(localKind = 'node', concat('node:', localNode, {owner}), {name})"


_COLUMNS: Final = (
    "date", "intervalStartTime", "intervalSeconds", "direction", "bytes", "packets", "connectionClass",
    "crossZone", "ipFamily", "localNode", "localAvailabilityZone", "remoteAvailabilityZone", "remoteCloud",
    "remoteRegion", "remoteCloudService", "remoteService",
    *(f"{side}{name}" for side in ("local", "remote")
      for name in ("Namespace", "Pod", "App", "Workload", "IPv4", "IP")),
)  # fmt: skip
"""What the report reads of a row: the pod and node views are read as one through these."""


def _source(spec: TopSpec) -> str:
    """The rows read: the view, plus the node rows' view when there is one."""
    if not spec.nodes_view:
        return f"{fqn(spec.database, spec.view)}"
    columns = ", ".join(dict.fromkeys((*_COLUMNS, *(("costUSD",) if spec.cost else ()))))
    return (
        f"(SELECT {columns}, '' AS localKind FROM {fqn(spec.database, spec.view)}\n"
        f"    UNION ALL SELECT {columns}, localKind FROM {fqn(spec.database, spec.nodes_view)})"
    )


def _pod_name(side: str, by: str) -> str:
    pod = f"concat({side}Namespace, '/', {side}Pod)"
    if by == "pod":
        return f"if({side}Pod != '', {pod}, {_outside(side, collapse=False)})"
    if by == "namespace":
        return f"if({side}Pod != '', {side}Namespace, {_outside(side, collapse=True)})"
    app = (
        f"multiIf({side}App != '', {side}App, {side}Workload != '', {side}Workload, {side}Pod != '', {pod}, "
    )
    app += f"{_outside(side, collapse=False)})"
    if by == "service" and side == "remote":
        return f"if(remoteService != '', concat('svc ', remoteService), {app})"
    if by == "domain" and side == "remote":  # the name a DNS answer gave the address, where there is one
        return f"if(remoteDNSName != '', toString(remoteDNSName), {app})"
    return app


_CLOUD_PEER: Final = (
    "arrayStringConcat(arrayFilter(x -> x != '', [remoteCloud, remoteCloudService, remoteRegion]), ' ')"
)


def _dimensions(by: str, *, nodes: bool = False) -> dict[str, str]:
    """Grouping expressions by output name: local, peer, class, local_zone, remote_zone, cross_zone."""
    if by not in ("class", "zone"):
        local, peer = _name("local", by, nodes=nodes), _name("remote", by)
    else:  # one line per class or zone pair, and the nodes' own traffic on lines of its own
        local, peer = ("if(localKind = 'node', 'nodes', '')" if nodes else "''"), "''"
    zones = ("localAvailabilityZone", "remoteAvailabilityZone") if by != "class" else ("''", "''")
    if by == "class":
        peer = _CLOUD_PEER
    return {
        "local": local,
        "peer": peer,
        "class": "toString(connectionClass)",
        "local_zone": f"toString({zones[0]})",
        "remote_zone": f"toString({zones[1]})",
        "cross_zone": "crossZone",
    }


def build_query(spec: TopSpec, *, now: float) -> str:
    """The report's SQL: groups of ``spec.by`` in ``[now - since, now]``, biggest first."""
    if spec.by not in BY or spec.direction not in DIRECTIONS or spec.limit < 1 or spec.since_s <= 0:
        raise ValueError(f"invalid report spec {spec}")
    cutoff = int(now - spec.since_s)
    dims = _dimensions(spec.by, nodes=bool(spec.nodes_view))
    select = ",\n    ".join(f"{expr} AS {name}" for name, expr in dims.items())
    cost = "\n    sum(costUSD) AS cost_usd," if spec.cost else ""
    return f"""SELECT
    {select},
    sum(bytes) AS sum_bytes,
    sum(packets) AS sum_packets,{cost}
    toUnixTimestamp(min(min(intervalStartTime)) OVER ()) AS window_start,
    toUnixTimestamp(max(max(intervalStartTime + intervalSeconds)) OVER ()) AS window_end,
    sum(sum(bytes)) OVER () AS total_bytes,
    count() OVER () AS groups
FROM {_source(spec)}
WHERE intervalStartTime >= toDateTime({cutoff}) AND date >= toDate(toDateTime({cutoff}))
    AND direction = '{spec.direction}'
GROUP BY {", ".join(dims)}
ORDER BY sum_bytes DESC, {", ".join(dims)}
LIMIT {int(spec.limit)}"""


@dataclass(frozen=True)
class Talker:
    local: str
    peer: str
    cls: str
    local_zone: str
    remote_zone: str
    cross_zone: bool
    bytes: int
    packets: int
    cost_usd: float | None = None


@dataclass(frozen=True)
class Report:
    spec: TopSpec
    now: float
    rows: list[Talker]
    window_start: int = 0
    window_end: int = 0
    total_bytes: int = 0
    groups: int = 0
    completeness: str = ""
    """The window's completeness (``kubenetmon check``'s summary), shown in the header."""

    @property
    def seconds(self) -> int:
        """Span the rows cover: first interval start to last interval end."""
        return max(self.window_end - self.window_start, 0)

    def rate(self, nbytes: int) -> float:
        return nbytes / self.seconds if self.seconds else 0.0

    def share(self, nbytes: int) -> float:
        return 100.0 * nbytes / self.total_bytes if self.total_bytes else 0.0


def parse_report(result: QueryResult, *, spec: TopSpec, now: float) -> Report:
    """The answer of ``build_query`` as a ``Report`` (column order as built there)."""
    if not result.rows:
        return Report(spec=spec, now=now, rows=[])
    col = {name: i for i, name in enumerate(result.columns)}
    talkers = [
        Talker(
            local=str(r[col["local"]]),
            peer=str(r[col["peer"]]),
            cls=str(r[col["class"]]),
            local_zone=str(r[col["local_zone"]]),
            remote_zone=str(r[col["remote_zone"]]),
            cross_zone=bool(r[col["cross_zone"]]),
            bytes=int(r[col["sum_bytes"]]),
            packets=int(r[col["sum_packets"]]),
            cost_usd=float(r[col["cost_usd"]]) if "cost_usd" in col else None,
        )
        for r in result.rows
    ]
    first = result.rows[0]
    return Report(
        spec=spec,
        now=now,
        rows=talkers,
        window_start=int(first[col["window_start"]]),
        window_end=int(first[col["window_end"]]),
        total_bytes=int(first[col["total_bytes"]]),
        groups=int(first[col["groups"]]),
    )


# -------------------------------------------------------------------------------------------- text


def human_rate(bytes_per_s: float) -> str:
    return human_bytes(bytes_per_s) + "/s"


def zones_text(t: Talker) -> str:
    """``a`` (same zone), ``a -> b (cross-zone)``, ``a -> ?``; empty when no zone is known."""
    if not t.local_zone and not t.remote_zone:
        return "cross-zone" if t.cross_zone else ""
    if t.local_zone == t.remote_zone:
        return t.local_zone
    if not t.remote_zone:
        return t.local_zone
    text = f"{t.local_zone or '?'} -> {t.remote_zone}"
    return text + " (cross-zone)" if t.cross_zone else text


def _since_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _head(report: Report) -> str:
    spec = report.spec
    head = f"top talkers by {spec.by}, {spec.direction}, last {_since_text(spec.since_s)}"
    if report.completeness:
        head += f" [{report.completeness}]"
    if not report.rows:
        return f"{head}: no traffic"
    rate = human_rate(report.rate(report.total_bytes))
    return f"{head}: {human_bytes(report.total_bytes)} in {report.seconds}s ({rate})"


def _span(report: Report) -> str:
    span = f"{format_time(report.window_start)} to {format_time(report.window_end)}"
    return f"{span}, {len(report.rows)} of {report.groups} rows"


def title(report: Report) -> str:
    """One line: what, how much, when."""
    return f"{_head(report)}, {_span(report)}" if report.rows else _head(report)


_NUMERIC: Final = ("BYTES", "BYTES/S", "PACKETS", "SHARE", "COST")
_KEYS: Final[dict[str, tuple[str, ...]]] = {
    # what a row is, first; for ``class`` the peer is the cloud, service and region
    "class": ("CLASS", "CLOUD", "ZONES"),
    "zone": ("ZONES", "CLASS"),
}
_ENDPOINTS: Final = ("LOCAL", "PEER", "CLASS", "ZONES")


def _cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and text cells; columns empty in every row (e.g. ZONES when no zone is known) are left out."""
    headers = (*_KEYS.get(report.spec.by, _ENDPOINTS), *_NUMERIC[: 5 if report.spec.cost else 4])
    rows = []
    for t in report.rows:
        text = {
            "LOCAL": t.local,
            "PEER": t.peer,
            "CLOUD": t.peer,
            "CLASS": t.cls,
            "ZONES": zones_text(t),
            "BYTES": human_bytes(t.bytes),
            "BYTES/S": human_rate(report.rate(t.bytes)),
            "PACKETS": f"{t.packets:,}",
            "SHARE": f"{report.share(t.bytes):.1f}%",
            "COST": usd(t.cost_usd or 0),
        }
        rows.append([text[h] for h in headers])
    keep = [i for i, name in enumerate(headers) if name in _NUMERIC or any(r[i] for r in rows)]
    return [headers[i] for i in keep], [[r[i] for i in keep] for r in rows]


def plain_table(report: Report, out: TextIO) -> None:
    out.write(title(report) + "\n")
    if not report.rows:
        return
    header, rows = _cells(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        parts = [
            cell.rjust(w) if name in _NUMERIC else cell.ljust(w)
            for cell, w, name in zip(line, widths, header, strict=True)
        ]
        out.write("  ".join(parts).rstrip() + "\n")


_DROPPED_FIRST: Final = ("PACKETS", "ZONES", "BYTES/S")
"""Columns a narrow terminal does without, in this order, before names are shortened."""


def fit(header: list[str], rows: list[list[str]], *, width: int) -> tuple[list[str], list[list[str]]]:
    """The columns that fit ``width`` (two spaces between columns), dropping ``_DROPPED_FIRST`` in order."""

    def needed(names: list[str]) -> int:
        cols = [header.index(n) for n in names]
        return sum(max(len(header[i]), *(len(r[i]) for r in rows)) for i in cols) + 2 * (len(cols) - 1)

    keep = list(header)
    for name in _DROPPED_FIRST:
        if needed(keep) <= width:
            break
        if name in keep:
            keep.remove(name)
    cols = [header.index(n) for n in keep]
    return keep, [[r[i] for i in cols] for r in rows]


def rich_table(report: Report, *, width: int | None = None) -> RenderableType:
    """The same report for a terminal: a bold title, colours for classes and cross-zone pairs.

    Every row stays on one line: on a narrow terminal (``width``) the packets, zones and rate columns go
    first, then long names are cut with an ellipsis; numbers and classes are never cut.
    """
    head = Text(_head(report), style="bold")
    if not report.rows:
        return head
    table = Table(header_style="bold", box=None, pad_edge=False)
    header, rows = _cells(report)
    if width:
        header, rows = fit(header, rows, width=width)
    natural = [max(len(name), *(len(r[i]) for r in rows)) for i, name in enumerate(header)]
    kept = [name in _NUMERIC or name == "CLASS" for name in header]  # never cut a number or a class
    names = kept.count(False) or 1
    fixed = sum(w for w, k in zip(natural, kept, strict=True) if k) + 2 * (len(header) - 1)
    room = (width or 1 << 16) - fixed
    for name, whole, keep in zip(header, natural, kept, strict=True):
        if keep:
            table.add_column(name, justify="right" if name in _NUMERIC else "left", no_wrap=True, width=whole)
        else:  # names and zones are cut (with an ellipsis) to share what the numbers leave
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=max(6, room // names))
    for line in rows:
        styled = [
            Text(
                cell,
                style=_CLASS_STYLE.get(cell, "") if name == "CLASS" else "yellow" if "cross" in cell else "",
            )
            for cell, name in zip(line, header, strict=True)
        ]
        table.add_row(*styled)
    return Group(head, table, Text(_span(report), style="dim"))


def summary_line(report: Report, *, top: int = 3) -> str:
    """One line per refresh when the output is not a terminal."""
    line = title(report)
    if report.rows:
        pairs = "; ".join(
            f"{' -> '.join(p for p in (t.local, t.peer) if p) or zones_text(t) or t.cls} {t.cls} "
            f"{human_bytes(t.bytes)}"
            for t in report.rows[:top]
        )
        line += f" | {pairs}"
    return line


FIELDS: Final = (
    "local", "peer", "class", "local_zone", "remote_zone", "cross_zone", "bytes", "bytes_per_s", "packets",
)  # fmt: skip


def as_dicts(report: Report) -> list[dict[str, Any]]:
    cost = report.spec.cost
    return [
        {
            "local": t.local,
            "peer": t.peer,
            "class": t.cls,
            "local_zone": t.local_zone,
            "remote_zone": t.remote_zone,
            "cross_zone": t.cross_zone,
            "bytes": t.bytes,
            "bytes_per_s": round(report.rate(t.bytes), 3),
            "packets": t.packets,
            **({"cost_usd": round(t.cost_usd or 0, 9)} if cost else {}),
        }
        for t in report.rows
    ]


def render(report: Report, *, fmt: str, out: TextIO, color: bool = False) -> None:
    """Print ``report`` as ``table`` (rich when ``color``), ``json`` (one document) or ``csv``."""
    if fmt == "json":
        doc = {
            "by": report.spec.by,
            "direction": report.spec.direction,
            "since_seconds": report.spec.since_s,
            "window_start": format_time(report.window_start) if report.rows else None,
            "window_end": format_time(report.window_end) if report.rows else None,
            "window_seconds": report.seconds,
            "total_bytes": report.total_bytes,
            "groups": report.groups,
            "rows": as_dicts(report),
        }
        out.write(json.dumps(doc) + "\n")
    elif fmt == "csv":
        fields = (*FIELDS, "cost_usd") if report.spec.cost else FIELDS
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in as_dicts(report))
    elif color:
        from rich.console import Console

        console = Console(file=out)
        console.print(rich_table(report, width=console.width))
    else:
        plain_table(report, out)
