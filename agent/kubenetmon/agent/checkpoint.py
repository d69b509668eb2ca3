"""The agent's durable state under ``--state-dir``: what a restart needs to resume without loss or repeats.

Two kinds of files, both written atomically (temporary file, fsync, rename, fsync of the directory):

- ``state.msgpack``: the flow baselines (last counters per flow, including recently missing ones and the
  keys recently finalised by DESTROY events), the open interval's start and deltas, the next report ``seq``,
  the node boot id, and the list of pending report ``seq`` s. Rewritten after every poll.
- ``reports/<seq>.msgpack``: one pending (cut, not yet fully acknowledged) report, its RAW messages
  verbatim. Written once, *before* the state that lists it; deleted after the state that no longer lists
  it. A report file the state does not list is an orphan of a crash between those two writes and is
  deleted at start (its deltas are still in the state, so nothing is lost and nothing was published).

So at any crash point the files on disk describe one consistent moment: baselines and deltas agree, and
every byte is either in the open deltas or in exactly one pending report (or already acknowledged).

A state file that cannot be read is moved aside to ``state.msgpack.bad-<time>``, logged, and the agent
starts fresh: never a crash loop. This module does I/O on the state directory only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

from kubenetmon.agent import reports
from kubenetmon.agent.ctnetlink import NO_START
from kubenetmon.agent.reports import Report

log = logging.getLogger(__name__)

FORMAT: Final = 2
"""2: flow keys carry the creation time before the conntrack id (``ctnetlink.INSTANCE``); 1 is read too."""
STATE_FILE: Final = "state.msgpack"
REPORTS: Final = "reports"
_CHUNK: Final = 16384


@dataclass
class State:
    """Everything a restart resumes from (see the module docstring)."""

    node: str
    boot: str
    next_seq: int = 0
    interval_start: int = 0
    """Start of the open interval the ``deltas`` belong to (0: none yet)."""
    pending: list[int] = field(default_factory=list)
    last: dict[bytes, bytes] = field(default_factory=dict)
    missing: list[dict[bytes, bytes]] = field(default_factory=list)
    destroyed: list[set[bytes]] = field(default_factory=list)
    deltas: dict[bytes, int] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    """The open span's ledger facts (``service.Agent`` names them); absent in older state files."""
    legacy_keys: bool = False
    """Read from format 1: keys converted without a creation time (``FlowTable.adopt_legacy_keys``)."""


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``): conntrack ids and counters live per boot."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _sections(n: int) -> int:
    return -(-n // _CHUNK)


def _maps(items: Iterable[tuple[bytes, bytes]]) -> Iterator[dict[bytes, bytes]]:
    it = iter(items)
    while section := dict(itertools.islice(it, _CHUNK)):
        yield section


class StateDir:
    """The state directory: ``load``/``save`` the state, store and drop pending reports."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.reports = self.path / REPORTS
        self.reports.mkdir(parents=True, exist_ok=True)
        if not os.access(self.reports, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.reports} is not writable")

    # -- state --------------------------------------------------------------------------------------

    def save(self, state: State) -> None:
        """Write the state (streamed in sections of at most 16384 entries: no second copy in memory)."""
        pack = msgpack.Packer(use_bin_type=True).pack
        deltas = ((k, v.to_bytes(32, "big")) for k, v in state.deltas.items())
        header = {
            "format": FORMAT,
            "node": state.node,
            "boot": state.boot,
            "next_seq": state.next_seq,
            "interval_start": state.interval_start,
            "pending": state.pending,
            "last": _sections(len(state.last)),
            "missing": [_sections(len(g)) for g in state.missing],
            "destroyed": len(state.destroyed),
            "deltas": _sections(len(state.deltas)),
            "ledger": state.ledger,
        }
        parts = itertools.chain(
            [header],
            _maps(state.last.items()),
            (m for g in state.missing for m in _maps(g.items())),
            (sorted(g) for g in state.destroyed),
            _maps(deltas),
            [{"end": FORMAT}],
        )
        self._write(self.path / STATE_FILE, (pack(p) for p in parts))

    def load(self, *, node: str) -> State | None:
        """The saved state, or None (no state, or an unusable one, which is moved aside and logged)."""
        path = self.path / STATE_FILE
        if not path.exists():
            return None
        try:
            state = self._read(path)
        except Exception as exc:  # any failure to read means the same thing: start fresh, keep the file
            self._discard(path, f"unreadable ({type(exc).__name__}: {exc})")
            return None
        if state.node != node:
            self._discard(path, f"written for node {state.node!r}, not {node!r}")
            return None
        return state

    def _read(self, path: Path) -> State:
        with path.open("rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False, max_buffer_size=1 << 30)
            head = next(unpacker)
            version = head.get("format") if isinstance(head, dict) else None
            if version not in (1, FORMAT):
                raise ValueError(
                    f"unknown state format {head.get('format') if isinstance(head, dict) else head!r}"
                )
            state = State(
                node=str(head["node"]),
                boot=str(head["boot"]),
                next_seq=int(head["next_seq"]),
                interval_start=int(head["interval_start"]),
                pending=[int(s) for s in head["pending"]],
                ledger={str(k): int(v) for k, v in (head.get("ledger") or {}).items()},
            )
            for _ in range(int(head["last"])):
                state.last.update(_mapping(next(unpacker)))
            for count in head["missing"]:
                generation: dict[bytes, bytes] = {}
                for _ in range(int(count)):
                    generation.update(_mapping(next(unpacker)))
                state.missing.append(generation)
            for _ in range(int(head["destroyed"])):
                state.destroyed.append({bytes(k) for k in next(unpacker)})
            for _ in range(int(head["deltas"])):
                state.deltas.update(
                    (k, int.from_bytes(v, "big")) for k, v in _mapping(next(unpacker)).items()
                )
            if next(unpacker) != {"end": version}:
                raise ValueError("state file is truncated")
        return state if version == FORMAT else _from_format_1(state)

    def _discard(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
        os.replace(path, aside)
        log.error(
            "state file %s; moved it to %s and starting fresh (bytes of the open interval and of flows "
            "that closed meanwhile are not reported; pending reports are kept)",
            why,
            aside,
        )

    # -- pending reports ----------------------------------------------------------------------------

    def save_report(self, report: Report) -> None:
        self._write(self.reports / f"{report.seq}.msgpack", [reports.dumps(report)])

    def load_report(self, seq: int) -> Report:
        return reports.loads((self.reports / f"{seq}.msgpack").read_bytes())

    def delete_report(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.reports / f"{seq}.msgpack").unlink()

    def stored_reports(self) -> list[int]:
        return sorted(int(p.stem) for p in self.reports.glob("*.msgpack") if p.stem.isdigit())

    def sweep(self, keep: Iterable[int]) -> list[int]:
        """Delete report files the state does not list (orphans of a crash before the state was saved)."""
        wanted = set(keep)
        orphans = [seq for seq in self.stored_reports() if seq not in wanted]
        for seq in orphans:
            self.delete_report(seq)
        for tmp in itertools.chain(self.path.glob("*.tmp"), self.reports.glob("*.tmp")):
            tmp.unlink(missing_ok=True)
        return orphans

    # -- atomic writes ------------------------------------------------------------------------------

    def _write(self, path: Path, parts: Iterable[bytes]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _from_format_1(state: State) -> State:
    """Keys of format 1 end in the conntrack id alone: give them the creation time 0 (none recorded).

    A conntrack created while ``nf_conntrack_timestamp`` was off has no creation time, so its new key is
    exactly this; one created with it on has one, and is matched to its old baseline by the delta table
    (``legacy_keys``), never counted afresh.
    """

    def key(old: bytes) -> bytes:
        return old[:-4] + NO_START + old[-4:]

    state.last = {key(k): v for k, v in state.last.items()}
    state.missing = [{key(k): v for k, v in g.items()} for g in state.missing]
    state.destroyed = [{key(k) for k in g} for g in state.destroyed]
    state.deltas = {key(k): v for k, v in state.deltas.items()}
    state.legacy_keys = True
    return state


def _mapping(obj: Any) -> dict[bytes, bytes]:
    if not isinstance(obj, dict):
        raise ValueError("state file section is not a map")
    return obj
