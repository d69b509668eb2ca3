"""Exit codes of every ``kubenetmon`` process, in one place, so scripts and supervisors can rely on them.

0    done (``check``: at least one node-interval judged, and all of them complete)
1    failed: a runtime failure, or something could not be reached in time (``check``: incomplete)
2    bad configuration or usage (said in one line on stderr)
3    ``check``: nothing to judge (no node-interval in the window was judged)
4    ``check``: the store could not be read (unreachable, or not a kubenetmon database)
130  interrupted (SIGINT, or a stop before the work was finished: rerun to finish)
141  the reader of the output went away (``kubenetmon top | head``): 128 + SIGPIPE, as a shell reports it
"""

from __future__ import annotations

from typing import Final

DONE: Final = 0
FAILED: Final = 1
INCOMPLETE: Final = 1
USAGE: Final = 2
NOTHING_TO_JUDGE: Final = 3
UNREADABLE: Final = 4
INTERRUPTED: Final = 130
OUTPUT_CLOSED: Final = 141
