"""Root pytest configuration: skip doctests of optional modules whose dependency is missing."""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["dask_reservoir/torch.py", "dask_reservoir/_core/tensors.py"]
