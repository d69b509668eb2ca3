"""``python -m kubenetmon.cli``: the ``kubenetmon`` command without its console script."""

import sys

from kubenetmon.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
