"""The runner's bookkeeping: which rows are out, what waits, what failed, what to submit next.

:class:`Ledger` (:mod:`~dask_reservoir._core.ledger.ledger`) holds the one
``threading.Condition`` and composes plain synchronous parts, each owning its state:

- :mod:`~dask_reservoir._core.ledger.cursor`: the source cursor (pass, position, rows requeued);
- :mod:`~dask_reservoir._core.ledger.waiting`: entries waiting, shipped or held back, the UIDs out;
- :mod:`~dask_reservoir._core.ledger.sequence`: submission numbers, the deterministic release order;
- :mod:`~dask_reservoir._core.ledger.bound`: the in-flight bound and the task size;
- :mod:`~dask_reservoir._core.ledger.failures`: the failure book (failures, quarantine, errors);
- :mod:`~dask_reservoir._core.ledger.tally`: the counters and load times.
"""

from __future__ import annotations

from dask_reservoir._core.ledger.bound import MIN_TASKS_IN_FLIGHT, default_bound, tasks_in_flight
from dask_reservoir._core.ledger.ledger import Ledger
from dask_reservoir._core.ledger.tally import RECENT_LOADS
from dask_reservoir._core.order import pass_order
from dask_reservoir._core.records import Completed, RunnerCounters

__all__ = [
    "MIN_TASKS_IN_FLIGHT",
    "RECENT_LOADS",
    "Completed",
    "Ledger",
    "RunnerCounters",
    "default_bound",
    "pass_order",
    "tasks_in_flight",
]
