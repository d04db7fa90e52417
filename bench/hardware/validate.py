"""``python -m bench.hardware.validate``: the performance model's validation (bench.projection.validate),
kept at the command every page and script names."""

import sys

from bench.projection.validate import main

if __name__ == "__main__":
    sys.exit(main())
