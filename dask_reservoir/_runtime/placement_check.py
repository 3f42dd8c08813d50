"""Whether any worker can run the reservoir's tasks now (``resources=``, ``workers=``).

dask leaves a task whose restrictions no worker meets pending, without an error (a worker
with the resource may join later).  At construction the reservoir warns when the cluster has
workers and none of them fits, so that a typo in a resource name or an address does not look
like a slow loader; with a dask source, persisted at construction, it refuses instead.
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
    none of the 1 workers has resources={'CPU_LOAD': 1.0} (they have resources {'GPU'})
    >>> print(unplaceable(workers, Placement(workers=("tcp://10.0.0.9:4001",))))
    none of the 1 workers has workers=['tcp://10.0.0.9:4001'] (they have addresses ['tcp://10.0.0.5:4001'] and names ['a'])
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
    have = []
    if placement.resources:
        have.append(f"resources {set(held)}" if held else "no resources")
    if placement.workers is not None and not placement.allow_other_workers:
        names = sorted({str(w.get("name")) for w in workers.values()})
        have.append(f"addresses {sorted(workers)[:5]} and names {names[:5]}")
    return f"none of the {len(workers)} workers has {' and '.join(wanted)} (they have {'; '.join(have)})"


def warn_if_unplaceable(client: Client, placement: Placement, *, dask_source: bool = False) -> None:
    """Warn (``UserWarning``) when the cluster has workers and none can run the reservoir's tasks.

    Raises
    ------
    ValueError
        Instead of the warning for a dask source: it is persisted on those workers at
        construction, which would wait, without a deadline, for such a worker to join.
    """
    if placement.resources is None and placement.workers is None:
        return
    try:
        workers = dict(client.scheduler_info()["workers"])
    except Exception as exc:  # no answer: nothing to say
        logger.debug("dask_reservoir: could not read the workers' resources: %r", exc)
        return
    why = unplaceable(workers, placement)
    if why is not None and dask_source:
        raise ValueError(
            f"{why}: a dask source is persisted on those workers when the reservoir is built, which "
            "would wait for one to join; start such a worker first (dask worker --resources "
            "NAME=AMOUNT), or make workers= a preference with allow_other_workers=True"
        )
    if why is not None:
        warnings.warn(
            f"{why}: dask keeps the reservoir's tasks pending until such a worker joins "
            "(dask worker --resources NAME=AMOUNT; names, addresses and hosts for workers=)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
