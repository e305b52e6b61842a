"""``python -m attnkit.bench attention ...``."""

import sys

from attnkit.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
