"""A writer process that SIGKILLs itself right after its first insert returned, before any ack.

Run as ``python -m tests.writer.crash_after_insert <kubenetmon writer flags>``: one worker, no supervisor,
the real ``work`` entry point; the only change is that acknowledging kills the process first. This
is the crash window the row identity exists for: rows in ClickHouse, messages still unacknowledged.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from kubenetmon.shared.pool import Ready
from kubenetmon.writer import cli, service
from kubenetmon.writer.worker import Writer


async def _die_instead_of_acking(self: Writer, batch: Any) -> None:
    print(f"inserted {batch.rows} rows; dying before the ack", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    config = cli.config_from(parser.parse_args())
    Writer._ack = _die_instead_of_acking  # type: ignore[method-assign]
    return service.work(config, Ready([0], 0, "writer-crash"))


if __name__ == "__main__":
    sys.exit(main())
