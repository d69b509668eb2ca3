"""Exit codes of every ``kubenetmon`` process, in one place, so scripts and supervisors can rely on them.

0    done
1    failed: a runtime failure, or something could not be reached in time
2    bad configuration or usage (said in one line on stderr)
130  interrupted (SIGINT, or a stop before the work was finished: rerun to finish)
"""

from __future__ import annotations

from typing import Final

DONE: Final = 0
FAILED: Final = 1
USAGE: Final = 2
INTERRUPTED: Final = 130
