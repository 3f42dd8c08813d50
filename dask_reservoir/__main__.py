"""``python -m dask_reservoir``."""

from __future__ import annotations

import sys

from dask_reservoir.cli import main

if __name__ == "__main__":
    sys.exit(main())
