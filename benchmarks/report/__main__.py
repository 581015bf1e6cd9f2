"""``python -m benchmarks.report RESULT.json [--out DIR] [--compare OLD.json]
[--tolerance 0.1] [--readme README.md]``: see ``benchmarks.report.command``."""

from __future__ import annotations

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
