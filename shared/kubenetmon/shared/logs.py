"""Logging setup: JSON lines (one object per line, for the cluster's log pipeline) or plain text.

``--log-format auto`` (the default) writes text when stderr is a terminal (a person reads it) and JSON
lines otherwise (a pipe, a file, a container runtime). urllib3, which logs a warning for each retry of
its connection pool, is quiet below errors: the ClickHouse sink says what failed in its own line.

Code logs with ``logging.getLogger(__name__)`` and passes structured fields through ``extra=``; they
become keys of the JSON object. Stages log one line per batch or interval, never one per record.
Logs go to stderr: stdout belongs to commands that print results (``nats init``, ``top``).
This module must not be imported for side effects: nothing happens until ``setup`` is called.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final, TextIO

from kubenetmon.shared.settings import LogSettings

_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_QUIET: Final = {"asyncio": logging.WARNING, "urllib3": logging.ERROR, "kubernetes": logging.WARNING}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "process", ...extra, "exc"}`` on one line."""

    def __init__(self, *, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": self.process or record.processName,
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, *, process: str = "") -> None:
        label = f"{process} " if process else ""
        super().__init__(f"%(asctime)s %(levelname)-7s {label}%(name)s: %(message)s%(_extra)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        record._extra = (" " + " ".join(f"{k}={v}" for k, v in extra.items())) if extra else ""
        return super().format(record)


def resolved(settings: LogSettings, stream: TextIO) -> str:
    """``json`` or ``text``: ``auto`` is text on a terminal."""
    if settings.format != "auto":
        return settings.format
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "json"


def setup(settings: LogSettings, *, process: str = "", stream: TextIO | None = None) -> None:
    """Configure the root logger once per process; ``process`` names it (e.g. ``enricher-2``)."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    json_lines = resolved(settings, out) == "json"
    handler.setFormatter(JsonFormatter(process=process) if json_lines else TextFormatter(process=process))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(max(level, root.level))
