"""Label RAW flow records: drops, endpoints, local/remote and direction, attributes, connection class.

Why it exists: this is the labeling spec (drop rules, endpoints, the direction table, attributes,
connection classes, the two rows per flow) as one pure function of a RAW message, the metadata index
and the range table. The enricher workers and ``kubenetmon label`` both call ``Labeler.label``, so
the offline tool gives exactly what the pipeline writes.

It works on whole columns, never row by row (the enricher's cost per record is this module's): the
two address columns map to memoised ``Endpoint`` tuples (``endpoints``), each record's case of the
direction table is a table lookup keyed by its endpoints' roles, the kept records are gathered per
direction with ``itemgetter`` and the endpoint tuples transposed at once, all in C. Output is
column-oriented in ``schema.COLUMNS`` order: the ``out`` row of every kept record (those whose source
is local, then those whose destination is local), then their ``in`` rows in the same order. Columns
that repeat themselves are ``spans.Spans`` (constants; a record's values in its ``in`` row), which the
ENRICHED encoder packs once per part. Every drop and every unknown is counted by reason in ``Stats``.
``remoteDNSName`` is the RAW message's name for the remote address, for remotes outside the cluster only.

It must not do I/O, read the clock except through ``enriched_at``, or mutate the index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import eq, getitem, itemgetter
from typing import Any, Final

from kubenetmon.enricher import endpoints as ep
from kubenetmon.enricher import nodeflows
from kubenetmon.enricher.connclass import INTRA_VPC, UNKNOWN, LabelSettings, Remote, remote_table
from kubenetmon.enricher.index import Index
from kubenetmon.enricher.prefixes import PrefixTable
from kubenetmon.enricher.ranges import Range
from kubenetmon.shared import schema, spans
from kubenetmon.shared.errors import ConfigError
from kubenetmon.shared.schema import RawMessage, RawRow

UDP: Final = 17
FLAGS: Final = ({"crossZone": False}, {"crossZone": True})
"""Indexed by crossZone; shared, never mutated: each row's map is one of these two objects."""
_PROTO_NAMES: Final = tuple(schema.PROTO_NAMES.get(number, "") for number in range(256))

DropHook = Callable[[int, RawRow, str], None]

# What happens to a record: kept with its source (OUT) or destination (IN) as the local side, or dropped.
OUT, IN, NODE, DIRECTION, PROTO, IGNORED_UDP, NODE_ROW, LOOPBACK = range(8)
REASONS: Final = {
    NODE: "node",
    DIRECTION: "direction",
    PROTO: "proto",
    IGNORED_UDP: "udp",
    LOOPBACK: "loopback",
}
_IPV6_LOOPBACK: Final = bytes(15) + b"\x01"


def _loopback(address: bytes) -> bool:
    return (len(address) == 4 and address[0] == 127) or address == _IPV6_LOOPBACK


# An endpoint's role for the observer: a node's address, no pod, a pod with no node, a pod on the
# observer, a pod on another node.
_NODE, _NO_POD, _NO_NODE, _HERE, _ELSEWHERE = range(5)


def _case(src: int, dst: int) -> int:
    """The direction table of the labeling spec (§1 node flows, §3), first matching rule wins."""
    if _NODE in (src, dst):
        return NODE
    if src == _HERE:
        return OUT
    if dst == _HERE:
        return IN
    if src == _NO_POD and dst == _ELSEWHERE:
        return OUT
    if src == _ELSEWHERE and dst == _NO_POD:
        return IN
    return DIRECTION


_CASES: Final = tuple(tuple(_case(src, dst) for dst in range(5)) for src in range(5))
"""Indexed by source role, then destination role."""
_KEY, _REMOTE = itemgetter(ep.KEY), itemgetter(ep.REMOTE)
_LOCAL_COLUMNS: Final = tuple("local" + name for name in ep.LOCAL_FIELDS)
_REMOTE_COLUMNS: Final = tuple("remote" + name for name in ep.REMOTE_FIELDS)
_OFTEN_CONSTANT: Final = frozenset(
    {"ipFamily", "proto", "localAvailabilityZone", "localNode", "localInstanceID"}
)
"""Columns whose values are usually all equal in a message (local pods share the observer's node)."""
_LOCAL_POD: Final = ep.LOCAL + ep.LOCAL_FIELDS.index("Pod")
_REMOTE_POD: Final = ep.REMOTE_FIELDS.index("Pod")


@dataclass(slots=True)
class Stats:
    """Counts for one ``label`` call (the caller adds them to its metrics)."""

    records: int = 0
    rows: int = 0
    node_rows: int = 0
    """Rows of the observer's own node's flows (``nodeflows``), not in ``rows``."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Drop reason -> records: ``udp``, ``node``, ``direction``, ``proto``."""
    unknown: Counter[str] = field(default_factory=Counter)
    """``local``/``remote`` endpoint not a known pod, ``ambiguous`` IP, ``class`` (empty region)."""


@dataclass(slots=True)
class Labelled:
    columns: list[str]
    data: list[Sequence[Any]]
    """One column per name: a read-only ``spans.Spans`` (an empty list when no record was kept)."""
    stats: Stats
    nodes: tuple[list[str], list[list[Any]]] | None = None
    """The node rows (``nodeflows``): column names and columns, for the node table; None: none."""


class Labeler:
    """Labels RAW messages against an index and a cloud range table; settings are fixed."""

    def __init__(self, settings: LabelSettings, *, index: Index, ranges: PrefixTable[Range]) -> None:
        self.settings = settings
        self.index = index
        self.endpoints = ep.Endpoints(settings, index=index, remotes=remote_table(ranges, settings))
        self._kept = frozenset(schema.PROTO_NAMES) - ({UDP} if settings.ignore_udp else set())
        private = self.remotes.lookup(b"\x0a\x00\x00\x01")
        if private is None or private.cls != INTRA_VPC:
            raise ConfigError("the range table was built without the private ranges (use settings.private)")

    @property
    def remotes(self) -> PrefixTable[Remote]:
        return self.endpoints.remotes

    def set_ranges(self, ranges: PrefixTable[Range]) -> None:
        """Swap in a refreshed range table (memoised endpoints are dropped with the old one)."""
        self.endpoints.remotes = remote_table(ranges, self.settings)

    def label(self, msg: RawMessage, *, enriched_at: int, on_drop: DropHook | None = None) -> Labelled:
        """Two rows per kept record (all ``out`` rows, then all ``in`` rows), in ``COLUMN_NAMES`` order;
        the observer's own node's records as node rows in ``Labelled.nodes``."""
        columns = msg.columns()
        proto, _, _, osrc, _, _, _, rsrc, _, _, _, opk, oby, rpk, rby = columns
        stats = Stats(records=len(proto))
        ambiguous = self.index.ambiguous
        src, dst = self.endpoints.resolve(osrc, rsrc, start=msg.start, end=msg.start + msg.seconds)
        cases = self._cases(msg.node, proto, src, dst)
        nodes = self._node_rows(msg, cases, src, dst, enriched_at=enriched_at, stats=stats)
        outs, ins = cases.count(OUT), cases.count(IN)
        if DIRECTION in cases:  # no local pod on either side: name loopback traffic as such
            for j, case in enumerate(cases):
                if case == DIRECTION and (_loopback(osrc[j]) or _loopback(rsrc[j])):
                    cases[j] = LOOPBACK
        if outs + ins < stats.records:
            _count_drops(msg, cases, stats, on_drop)
        if self.index.ambiguous != ambiguous:
            stats.unknown["ambiguous"] += self.index.ambiguous - ambiguous
        stats.rows = 2 * (outs + ins)
        if not stats.rows:
            return Labelled(list(schema.COLUMN_NAMES), [[] for _ in schema.COLUMN_NAMES], stats, nodes)
        o, i = _taker(cases, OUT, outs), _taker(cases, IN, ins)
        twice = self._sides(src, dst, o, i, stats)
        twice.update(self._flows(columns, o, i, outs=outs, ins=ins))
        if msg.names:
            twice["remoteDNSName"] = _remote_names(msg.names, o(rsrc) + i(osrc), chain(o(dst), i(src)))
        packed = msg.identities()  # hashed for the kept records only
        out_ids = schema.flow_ids(msg.msg_id, o(packed) + i(packed))
        pairs: dict[str, tuple[Sequence[Any], Sequence[Any]]] = {
            "bytes": (o(oby) + i(rby), o(rby) + i(oby)),
            "packets": (o(opk) + i(rpk), o(rpk) + i(opk)),
            "flowId": (out_ids, spans.flipped(out_ids, schema.IN_FLIP)),
        }
        constants = {
            **nodeflows.message_constants(self.settings, msg, enriched_at=enriched_at),
            "remoteDNSName": "",
        }
        data = _assemble(twice, pairs, constants, stats.rows)
        return Labelled(list(schema.COLUMN_NAMES), data, stats, nodes)

    def _node_rows(
        self,
        msg: RawMessage,
        cases: list[int],
        src: list[ep.Endpoint],
        dst: list[ep.Endpoint],
        *,
        enriched_at: int,
        stats: Stats,
    ) -> tuple[list[str], list[list[Any]]] | None:
        """The node rows of the records whose local side is the observer's own node (their case becomes
        ``NODE_ROW``: not a drop); None when there are none or node flows are dropped."""
        if not self.settings.node_flows or NODE not in cases:
            return None
        own = nodeflows.observer_ips(self.index, msg.node)
        if not own:
            return None
        columns = msg.columns()
        osrc, rsrc = columns[3], columns[7]
        picked = []
        far = []  # the far side's endpoint, as resolved for the whole message
        for j, case in enumerate(cases):
            if case == NODE:
                side = nodeflows.own_side(own, osrc[j], rsrc[j])
                if side >= 0:
                    picked.append((j, side))
                    far.append(dst[j] if side == 0 else src[j])
                    cases[j] = NODE_ROW
        if not picked:
            return None
        stats.node_rows = 2 * len(picked)
        return nodeflows.label_nodes(
            msg,
            picked,
            endpoints=self.endpoints,
            index=self.index,
            settings=self.settings,
            enriched_at=enriched_at,
            owners=msg.owners,
            far=far,
        )

    def _cases(
        self, observer: str, proto: Sequence[int], src: list[ep.Endpoint], dst: list[ep.Endpoint]
    ) -> list[int]:
        """Each record's fate (``OUT``, ``IN`` or a drop), by the spec's order of rules."""
        src_rows = {ep.NODE_ADDRESS: _CASES[_NODE], ep.NOT_A_POD: _CASES[_NO_POD], "": _CASES[_NO_NODE]}
        dst_roles = {ep.NODE_ADDRESS: _NODE, ep.NOT_A_POD: _NO_POD, "": _NO_NODE}
        src_rows[observer] = _CASES[_HERE]
        dst_roles[observer] = _HERE
        cases = list(
            map(
                getitem,
                map(src_rows.get, map(_KEY, src), repeat(_CASES[_ELSEWHERE])),
                map(dst_roles.get, map(_KEY, dst), repeat(_ELSEWHERE)),
            )
        )
        if not self._kept.issuperset(proto):  # protocol drops come first
            for j, number in enumerate(proto):
                if number not in self._kept:
                    cases[j] = PROTO if number not in schema.PROTO_NAMES else IGNORED_UDP
        return cases

    def _sides(
        self, src: list[ep.Endpoint], dst: list[ep.Endpoint], o: Take, i: Take, stats: Stats
    ) -> dict[str, Sequence[Any]]:
        """Endpoint columns: the local side of an ``OUT`` record is its source, else its destination."""
        local = _transpose(chain(o(src), i(dst)), ep.ZONE + 1)
        remote = _transpose(chain(map(_REMOTE, o(dst)), map(_REMOTE, i(src))), ep.REMOTE_ZONE + 1)
        _count_unknown(stats, local, remote)
        rows = map(self.endpoints.cross_zone.__getitem__, local[ep.ZONE])
        cross: list[bool] = list(map(getitem, rows, remote[ep.REMOTE_ZONE]))
        values: dict[str, Sequence[Any]] = {
            "connectionClass": remote[ep.CLASS],
            "remoteCloudService": remote[ep.SERVICE],
            "ipFamily": local[ep.FAMILY],
            "crossZone": cross,
            "connectionFlags": list(map(FLAGS.__getitem__, cross)),
        }
        values.update(zip(_LOCAL_COLUMNS, local[ep.LOCAL :], strict=False))
        values.update(zip(_REMOTE_COLUMNS, remote, strict=False))
        return values

    def _flows(
        self, columns: list[Sequence[Any]], o: Take, i: Take, *, outs: int, ins: int
    ) -> dict[str, Sequence[Any]]:
        """Columns from the flow tuples: protocol, ports, and the Service the flow was addressed to."""
        proto, odst, osp, odp, rsp = columns[0], columns[4], columns[5], columns[6], columns[9]
        services = self._services(odst, odp)
        return {
            "proto": list(map(_PROTO_NAMES.__getitem__, o(proto) + i(proto))),
            "localPort": o(osp) + i(rsp),
            "remotePort": o(rsp) + i(osp),
            "localService": ("",) * outs + i(services),
            "remoteService": o(services) + ("",) * ins,
        }

    def _services(self, dsts: Sequence[bytes], dports: Sequence[int]) -> list[str]:
        """The Service each original destination addressed: a cluster IP, else a node port of a node."""
        index = self.index
        found = list(map(index.services.get, dsts, repeat("")))
        if not index.node_ips.keys().isdisjoint(dsts):
            for j, dst in enumerate(dsts):
                if not found[j] and dst in index.node_ips:
                    found[j] = index.node_ports.get(dports[j], "")
        return found


Take = Callable[[Sequence[Any]], tuple[Any, ...]]


def _taker(cases: list[int], case: int, count: int) -> Take:
    """A function gathering, from any column, the values of the records whose fate is ``case``."""
    if count == len(cases):
        return tuple
    if count == 0:
        return lambda column: ()
    picked = list(compress(range(len(cases)), map(eq, cases, repeat(case))))
    if count == 1:
        return lambda column: (column[picked[0]],)
    return itemgetter(*picked)


def _assemble(
    twice: dict[str, Sequence[Any]],
    pairs: dict[str, tuple[Sequence[Any], Sequence[Any]]],
    constants: dict[str, Any],
    rows: int,
) -> list[Sequence[Any]]:
    """The output columns: record values twice (``out`` rows, then ``in`` rows), pairs, constants.

    Every column is a ``Spans``: the encoder packs each repeated part once, and no list of values is
    built unless someone reads them.
    """
    data: list[Sequence[Any]] = []
    for name in schema.COLUMN_NAMES:
        values = twice.get(name)
        if values is not None:
            if name in _OFTEN_CONSTANT and values.count(values[0]) == len(values):
                data.append(spans.repeated(values[0], rows))
            else:
                data.append(spans.twice(values))
        elif name == "direction":
            data.append(spans.Spans((("out",), rows // 2), (("in",), rows // 2)))
        elif name in pairs:
            first, second = pairs[name]
            data.append(spans.Spans((first, 1), (second, 1)))
        else:
            data.append(spans.repeated(constants[name], rows))
    return data


def _remote_names(
    names: dict[bytes, str], addresses: Sequence[bytes], remotes: Iterable[ep.Endpoint]
) -> list[str]:
    """The DNS name of each remote address the agent named, for remotes outside the cluster only (no
    pod held the address in the interval, and it is no node's): a pod's or a node's name is never a DNS
    answer's, however the answer read."""
    return [
        names.get(address, "") if key == ep.NOT_A_POD else ""
        for address, key in zip(addresses, map(_KEY, remotes), strict=True)
    ]


def _count_drops(msg: RawMessage, cases: list[int], stats: Stats, on_drop: DropHook | None) -> None:
    for case, reason in REASONS.items():
        n = cases.count(case)
        if n:
            stats.dropped[reason] += n
    if on_drop is not None:
        rows = msg.rows
        for j, case in enumerate(cases):
            if case in REASONS:
                on_drop(j, rows[j], REASONS[case])


def _transpose(tuples: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Columns of equal-width tuples (``width`` of them, even without tuples)."""
    return list(zip(*tuples, strict=True)) or [()] * width


def _count_unknown(stats: Stats, local: list[tuple[Any, ...]], remote: list[tuple[Any, ...]]) -> None:
    counts = {
        "local": local[_LOCAL_POD].count(""),
        "remote": remote[_REMOTE_POD].count(""),
        "class": remote[ep.CLASS].count(UNKNOWN),
    }
    for reason, n in counts.items():
        if n:
            stats.unknown[reason] += n


class FlowIds:
    """``schema.flow_id`` of both directions of a row, as the labeler computes them (``schema.flow_ids``)."""

    __slots__ = ("_msg_id",)

    def __init__(self, msg_id: str) -> None:
        self._msg_id = msg_id

    def of(self, row: RawRow) -> tuple[int, int]:
        """(flow id ``out``, flow id ``in``) of ``row``."""
        (out,) = schema.flow_ids(self._msg_id, schema.identities([(value,) for value in row]))
        return out, out ^ schema.IN_FLIP


__all__ = ["UNKNOWN", "FlowIds", "LabelSettings", "Labeler", "Labelled", "Stats"]
