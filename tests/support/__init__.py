"""What the tests share, one of each: starting ``kubenetmon`` commands, process wrappers, waiting on a
condition, reading a role's HTTP endpoints, and the builders and helpers of each part's tests.

- ``commands``: the ``kubenetmon`` argv (``KUBENETMON``), a scrubbed environment, flags from settings.
- ``processes``: ``Process`` (a child with its output in files) and the process-tree helpers.
- ``waiting``: ``eventually`` (async) and ``wait_until`` (blocking), both a condition with a deadline.
- ``http``: GET a role's ``/metrics``, ``/healthz``, ``/readyz``; parse Prometheus samples.

Fixtures live in ``tests/fixtures`` and the conftest files; nothing here is a fixture.
"""

from tests.support.commands import KUBENETMON, flags
from tests.support.processes import Process
from tests.support.waiting import eventually

__all__ = ["KUBENETMON", "Process", "eventually", "flags"]
