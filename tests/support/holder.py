"""Another process holding a chDB directory (as a foreign owner would), until the test lets it go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

_SCRIPT = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
client.query("SELECT 1")
print("holding", flush=True)
sys.stdin.read()
client.close()
"""


class Holder:
    """``with Holder(path):`` the directory is locked by a child process; leaving the block frees it."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Holder:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the child holds the directory (or dies)
        if line.strip() != "holding":
            self.proc.kill()
            raise RuntimeError(f"holder did not start: {line!r}")
        return self

    def release(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
