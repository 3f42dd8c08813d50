"""Whether any worker can run the reservoir's tasks now (``resources=``, ``workers=``).

dask leaves a task whose restrictions no worker meets pending, without an error (a worker
with the resource may join later).  At construction the reservoir warns when the cluster has
workers and none of them fits, so that a typo in a resource name or an address does not look
like a slow loader.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from distributed import Client

from dask_reservoir._core.deprecations import user_stacklevel
from dask_reservoir._core.etiquette import Placement

__all__ = ["unplaceable", "warn_if_unplaceable"]

logger = logging.getLogger("dask_reservoir")


def _fits(address: str, worker: dict[str, Any], placement: Placement) -> bool:
    """Whether the worker at ``address`` (``scheduler_info()`` entry ``worker``) meets ``placement``."""
    has = worker.get("resources") or {}
    if placement.resources and any(has.get(name, 0) < need for name, need in placement.resources.items()):
        return False
    if placement.workers is not None and not placement.allow_other_workers:
        host = address.rsplit("://", maxsplit=1)[-1].rsplit(":", 1)[0]
        names = {address, str(worker.get("name")), str(worker.get("host", host)), host}
        return bool(names & set(placement.workers))
    return True


def unplaceable(workers: dict[str, dict[str, Any]], placement: Placement) -> str | None:
    """Why none of ``workers`` can run a task of ``placement``; None when one can, or there is none.

    Examples
    --------
    >>> workers = {"tcp://10.0.0.5:4001": {"name": "a", "host": "10.0.0.5", "resources": {"GPU": 1}}}
    >>> unplaceable(workers, Placement(resources={"GPU": 1.0})) is None
    True
    >>> print(unplaceable(workers, Placement(resources={"CPU_LOAD": 1.0})))
    none of the 1 workers has resources={'CPU_LOAD': 1.0} (they have {'GPU'})
    >>> unplaceable(workers, Placement(workers=("10.0.0.5",))) is None  # a host names its workers
    True
    """
    if not workers or (placement.resources is None and placement.workers is None):
        return None
    if any(_fits(address, worker, placement) for address, worker in workers.items()):
        return None
    wanted = []
    if placement.resources:
        wanted.append(f"resources={placement.resources!r}")
    if placement.workers is not None and not placement.allow_other_workers:
        wanted.append(f"workers={list(placement.workers)!r}")
    held = sorted({name for w in workers.values() for name in (w.get("resources") or {})})
    return (
        f"none of the {len(workers)} workers has {' and '.join(wanted)} "
        f"(they have {set(held) if held else 'no resources'})"
    )


def warn_if_unplaceable(client: Client, placement: Placement) -> None:
    """Warn (``UserWarning``) when the cluster has workers and none can run the reservoir's tasks."""
    if placement.resources is None and placement.workers is None:
        return
    try:
        workers = dict(client.scheduler_info()["workers"])
    except Exception as exc:  # no answer: nothing to say
        logger.debug("dask_reservoir: could not read the workers' resources: %r", exc)
        return
    why = unplaceable(workers, placement)
    if why is not None:
        warnings.warn(
            f"{why}: dask keeps the reservoir's tasks pending until such a worker joins "
            "(dask worker --resources NAME=AMOUNT; names, addresses and hosts for workers=)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
