"""What a local run (``kubenetmon up``) records in its data directory for the commands that come after it.

``<data dir>/up.json`` holds the run's NATS URL, the pid of a NATS server it left running
(``up --keep-nats``), and the labelling flags its enricher ran with (cloud, region, range files,
inventory...). ``replay raw --data-dir DIR`` takes them as its defaults, so a replay labels as the run
did unless told otherwise, and says so when the flags it is given would label differently;
``replay enriched --data-dir DIR`` finds the run's NATS the same way.

Pure data and one small file; this module starts nothing and reads no environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from kubenetmon.shared.errors import ConfigError

RECORD_FILE: Final = "up.json"


@dataclass(frozen=True)
class LocalRun:
    nats_url: str
    labelling: tuple[str, ...] = ()
    """The enricher's labelling flags, as its command line had them (``--cloud aws --region ...``)."""
    nats_pid: int = 0
    """A NATS server ``up --keep-nats`` left running (0: none)."""

    def kept_nats_alive(self) -> bool:
        """Whether the NATS server this run left running is still there."""
        if self.nats_pid <= 0:
            return False
        try:
            os.kill(self.nats_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def record_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / RECORD_FILE


def write(data_dir: str | Path, run: LocalRun) -> None:
    """Replace the record atomically."""
    path = record_path(data_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    doc = asdict(run) | {"labelling": list(run.labelling)}
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def read(data_dir: str | Path) -> LocalRun | None:
    """The record of the last run in ``data_dir``; None if there is none; ``ConfigError`` if unreadable."""
    path = record_path(data_dir)
    try:
        doc = json.loads(path.read_text())
        return LocalRun(
            nats_url=str(doc["nats_url"]),
            labelling=tuple(str(a) for a in doc.get("labelling", ())),
            nats_pid=int(doc.get("nats_pid", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a record of `kubenetmon up` ({exc})") from None
