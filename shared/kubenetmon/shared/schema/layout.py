"""The ENRICHED v2 column layout: each distinct value once, each distinct run of values once.

Why: an ENRICHED message repeats itself. Its constants (interval, observer, environment, source id)
fill whole columns; a record's labels appear in its ``out`` row and again in its ``in`` row; one node's
records name the same few pods, zones, workloads and addresses over and over. Plain msgpack arrays
(v1) wrote every cell, 356 B a row; v2 about 120 B, and about 40 B once the stream's S2 compression
has found the repeated strings. v2 writes:

- ``dict``: every distinct value of the dictionary-coded columns (``enriched.CODED_WIRES``: the flag
  maps), once for the whole message, shared by all columns;
- ``seqs``: sequences of values (dictionary indices for coded columns, the values themselves for the
  others), each distinct sequence once: a record's labels, used by its ``out`` and ``in`` rows alike.
  A sequence of integers derived from another (``spans.Flipped``: the ``in`` rows' ``flowId`` is the
  ``out`` rows' with one bit flipped) is the map ``{"xor": [seq, mask]}``, not its values;
- ``data``: per column a flat array ``[seq, times, seq, times, ...]``: the column is ``seqs[seq]``
  repeated ``times`` times, then the next pair. A constant column is one sequence of one value.

The encoder reads the runs straight from ``spans.Spans`` columns (the labeler builds them that way);
a plain list is one run of one sequence. The decoder expands runs back into plain lists, so consumers
see what v1 gave them. Which columns are coded is the caller's (``enriched``: by wire type); this
module knows no column. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import xor
from typing import Any

from kubenetmon.shared.spans import Flipped, Spans

Run = tuple[list[Any], int]
"""Values, and how many times they follow each other (decoded)."""


class LayoutError(ValueError):
    """A v2 layout that does not hold together (the caller turns it into a ``DecodeError``)."""


def _key(value: Any) -> Any:
    """A dictionary key for ``value``: itself, or a map's items (a map is not hashable)."""
    return tuple(sorted(value.items())) if type(value) is dict else value


class _Dictionary:
    """The message's distinct values, in their order of first appearance, and which of them are maps."""

    __slots__ = ("index", "maps")

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.maps: list[int] = []

    def codes(self, values: Sequence[Any]) -> list[int]:
        """Each value's index, adding the values it lacks (loops in C, but over the new values)."""
        index = self.index
        try:
            new = dict.fromkeys(values)
        except TypeError:  # maps (flags) are not hashable: each distinct object keyed by its items
            return self._map_codes(values)
        if not new.keys() <= index.keys():
            n = len(index)
            fresh = [v for v in new if v not in index]
            index.update(zip(fresh, range(n, n + len(fresh)), strict=True))
        return list(map(index.__getitem__, values))

    def _map_codes(self, values: Sequence[Any]) -> list[int]:
        """``codes`` of values some of which are maps: each distinct object keyed once (by its items),
        then each value's index through its object's id (no key built or hashed per value)."""
        index = self.index
        ids = list(map(id, values))
        code_of: dict[int, int] = {}
        for i, value in dict(zip(ids, values, strict=True)).items():  # distinct objects, in order
            key = _key(value)
            code = index.get(key)
            if code is None:
                code = index[key] = len(index)
                if type(value) is dict:
                    self.maps.append(code)
            code_of[i] = code
        return list(map(code_of.__getitem__, ids))

    def entries(self) -> list[Any]:
        out = list(self.index)
        for i in self.maps:
            out[i] = dict(out[i])
        return out


def pack(
    columns: Sequence[Sequence[Any]], coded: Sequence[bool]
) -> tuple[list[Any], list[Any], list[list[int]]]:
    """``(dict, seqs, data)`` of the columns; ``coded[i]``: column ``i``'s values go through ``dict``."""
    table = _Dictionary()
    seqs: list[Any] = []
    seen: dict[tuple[int, bool], int] = {}  # (id of a span's values, coded) -> its sequence
    data: list[list[int]] = []
    for column, code in zip(columns, coded, strict=True):
        spans = column.spans if type(column) is Spans else ((column, 1),)
        runs: list[int] = []
        for values, times in spans:
            # ids are stable: every ``values`` object lives in ``columns`` for the whole call
            k = seen.get((id(values), code))
            if k is None:
                k = _sequence(values, code, table, seqs, seen)
            runs += (k, times)
        data.append(runs)
    return table.entries(), seqs, data


def _sequence(
    values: Sequence[Any],
    code: bool,
    table: _Dictionary,
    seqs: list[Any],
    seen: dict[tuple[int, bool], int],
) -> int:
    """The index in ``seqs`` of ``values`` (coded or not), added on first sight."""
    k = seen.get((id(values), code))
    if k is None:
        if type(values) is Flipped and not code:
            entry: Any = {"xor": [_sequence(values.base, code, table, seqs, seen), values.mask]}
        else:
            entry = table.codes(values) if code else values
        k = seen[id(values), code] = len(seqs)
        seqs.append(entry)
    return k


def unpack(entries: Any, seqs: Any, data: Any, coded: Sequence[bool], *, max_cells: int) -> list[list[Run]]:
    """Each column's runs with dictionary indices resolved; the rows are not expanded yet.

    Checks the structure only: indices in range, runs of (sequence, count) pairs, the same number of
    rows in every column, at most ``max_cells`` values once expanded (a few bytes of runs must not
    unfold into gigabytes). Values are the caller's to check, one sequence at a time.
    """
    if type(entries) is not list or type(seqs) is not list or type(data) is not list:
        raise LayoutError("dict, seqs and data must be arrays")
    if not all(type(s) is list or type(s) is dict for s in seqs):
        raise LayoutError("a sequence is neither an array nor a derived sequence")
    resolved: dict[int, list[Any]] = {}
    columns: list[list[Run]] = []
    rows: int | None = None
    for i, (runs, code) in enumerate(zip(data, coded, strict=True)):
        if type(runs) is not list or len(runs) % 2 or not all(type(x) is int for x in runs):
            raise LayoutError(f"column {i}: runs must be an array of integer pairs")
        if runs and (min(runs) < 0 or max(runs[::2]) >= len(seqs)):
            raise LayoutError(f"column {i}: a sequence index or a count out of range")
        column: list[Run] = []
        n = 0
        for k, times in zip(runs[::2], runs[1::2], strict=True):
            values = seqs[k]
            if type(values) is dict:
                values = resolved.get(k) or resolved.setdefault(k, _derive(values, seqs, k))
            elif code:
                values = resolved.get(k) or resolved.setdefault(k, _resolve(values, entries, k))
            column.append((values, times))
            n += len(values) * times
        if rows is None:
            rows = n
            if rows * len(data) > max_cells:
                raise LayoutError(f"{rows} rows x {len(data)} columns exceed {max_cells} values")
        elif n != rows:
            raise LayoutError(f"column {i} has {n} values, expected {rows}")
        columns.append(column)
    return columns


def _resolve(codes: list[Any], entries: list[Any], k: int) -> list[Any]:
    if codes and not (all(type(c) is int for c in codes) and min(codes) >= 0 and max(codes) < len(entries)):
        raise LayoutError(f"sequence {k}: dictionary index out of range")
    return list(map(entries.__getitem__, codes))


def _derive(entry: dict[Any, Any], seqs: list[Any], k: int) -> list[Any]:
    """The values of a derived sequence: ``{"xor": [seq, mask]}``, over a plain sequence of integers."""
    spec = entry.get("xor")
    if len(entry) != 1 or type(spec) is not list or len(spec) != 2 or not all(type(x) is int for x in spec):
        raise LayoutError(f"sequence {k}: not a derived sequence")
    base, mask = spec
    if not (0 <= base < len(seqs) and type(seqs[base]) is list and 0 <= mask < 1 << 64):
        raise LayoutError(f"sequence {k}: derived from no plain sequence, or a mask out of range")
    values = seqs[base]
    if not all(type(v) is int for v in values):
        raise LayoutError(f"sequence {k}: derived from a sequence that is not of integers")
    return list(map(xor, values, repeat(mask)))


def expand(column: list[Run], *, share: bool = False) -> list[Any]:
    """The plain values of a column's runs; ``share``: a column of one sequence once is that sequence's
    list itself (read-only callers: no copy, but columns may share a list)."""
    if len(column) == 1:
        values, times = column[0]
        if share and times == 1:
            return values
        return values * times  # a new list even for one run: columns never share a list
    out: list[Any] = []
    for values, times in column:
        out += values * times
    return out
