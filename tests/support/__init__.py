"""What the tests share, one of each; nothing here is a fixture (those are in ``tests/fixtures`` and the
conftest files), and no test imports a helper from a conftest or from another test module.

The basics, used everywhere:

- ``commands``: the ``kubenetmon`` argv (``KUBENETMON``), a scrubbed environment, ``kubenetmon(...)`` run
  to completion, the flags that reproduce a settings object.
- ``processes``: ``Process`` (a child with its output in files, its JSON log) and the process tree read
  from ``/proc``; ``roles`` (restartable pipeline roles) and ``up`` (``kubenetmon up``) build on them.
- ``waiting``: ``eventually`` (async) and ``wait_until`` (blocking), a condition with a deadline.
- ``http``: GET a role's ``/metrics``, ``/healthz``, ``/readyz``; Prometheus samples.

Then each part's helpers: ``agent``, ``agent_fakes``, ``ctmsg`` (ctnetlink messages), ``builders``
(Kubernetes objects), ``enricher``, ``replay``, ``writer``, ``messages`` (ENRICHED), ``holder``, ``rows``
(``top``), ``fuzz``, ``secure``, ``natsconf``, ``nats_jwt``, ``compose``.
"""

from tests.support.commands import KUBENETMON, flags
from tests.support.processes import Process
from tests.support.waiting import eventually

__all__ = ["KUBENETMON", "Process", "eventually", "flags"]
