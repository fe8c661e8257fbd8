"""``python -m benchmarks``: environment defaults first (before torch loads), then the command line."""

import sys

from benchmarks import set_environment

set_environment()

from benchmarks.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
