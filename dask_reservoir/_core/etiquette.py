"""Cluster etiquette: where and how urgently the reservoir's tasks run on a shared cluster.

Pure code.  :func:`check_etiquette` validates ``resources=``, ``priority=``, ``workers=``,
``allow_other_workers=`` and ``annotations=`` (named as ``Client.submit`` and
``dask.annotate`` name them); :class:`Placement` holds them, and the runtime passes
:meth:`Placement.submit_kwargs` to every ``Client.submit`` of the reservoir and
:attr:`Placement.annotations` to ``dask.annotate`` around it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Placement", "check_etiquette"]

MAX_PRIORITY = 2**31 - 1
"""The largest ``priority`` magnitude accepted (dask sends priorities as 64-bit integers)."""

SUBMIT_KEYS = ("priority", "resources", "workers", "allow_other_workers", "retries")
"""Annotations that ``Client.submit`` sets itself: given as options, not as ``annotations``."""


@dataclass(frozen=True)
class Placement:
    """The checked etiquette options (see ``AsyncReservoir``).

    Examples
    --------
    >>> p = Placement(resources={"CPU_LOAD": 1.0}, priority=-5, workers=("tcp://a:1",))
    >>> p.submit_kwargs()
    {'priority': -5, 'resources': {'CPU_LOAD': 1.0}, 'workers': ['tcp://a:1'], 'allow_other_workers': False}
    >>> Placement().submit_kwargs()
    {'priority': 0}
    """

    resources: dict[str, float] | None = None
    priority: int = 0
    workers: tuple[str, ...] | None = None
    allow_other_workers: bool = False
    annotations: dict[str, Any] = field(default_factory=dict)

    def submit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Client.submit`` for each task of the reservoir."""
        kwargs: dict[str, Any] = {"priority": self.priority}
        if self.resources is not None:
            kwargs["resources"] = dict(self.resources)
        if self.workers is not None:
            kwargs["workers"] = list(self.workers)
            kwargs["allow_other_workers"] = self.allow_other_workers
        return kwargs


def check_etiquette(k: dict[str, Any]) -> Placement:
    """The :class:`Placement` of the parameters ``k``; ``TypeError``/``ValueError`` naming the parameter.

    Examples
    --------
    >>> check_etiquette({"resources": {"GPU": 0}, "priority": 0, "workers": None,
    ...                  "allow_other_workers": False, "annotations": None})
    Traceback (most recent call last):
    ...
    ValueError: resources must map resource names to finite amounts > 0, got {'GPU': 0}
    """
    resources = k["resources"]
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(
                f"resources must be a dict or None, got {type(resources).__name__}: {resources!r}"
            )
        good = all(isinstance(name, str) and _positive(v) for name, v in resources.items())
        if not good or not resources:
            raise ValueError(f"resources must map resource names to finite amounts > 0, got {resources!r}")
        resources = {name: float(v) for name, v in resources.items()}
    priority = k["priority"]
    if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}: {priority!r}")
    if not -MAX_PRIORITY <= int(priority) <= MAX_PRIORITY:
        # beyond 64 bits the scheduler cannot send the task to a worker, which then leaves the cluster
        raise ValueError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {priority}")
    workers = k["workers"]
    if workers is not None:
        listed = [workers] if isinstance(workers, str) else workers
        if not isinstance(listed, (list, tuple, set, frozenset)) or not all(
            isinstance(w, str) for w in listed
        ):
            raise TypeError(f"workers must be a str, a list of str or None, got {workers!r}")
        if not listed or not all(w.strip() for w in listed):
            raise ValueError(
                f"workers must name at least one worker (address, name or host) and no empty name, got {workers!r}"
            )
        workers = tuple(sorted(listed)) if isinstance(listed, (set, frozenset)) else tuple(listed)
    allow = k["allow_other_workers"]
    if not isinstance(allow, bool):
        raise TypeError(f"allow_other_workers must be a bool, got {type(allow).__name__}: {allow!r}")
    if allow and workers is None:
        raise ValueError("allow_other_workers=True needs workers= (the workers to prefer), got workers=None")
    annotations = k["annotations"]
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(isinstance(key, str) for key in annotations):
        raise TypeError(f"annotations must be a dict with str keys or None, got {annotations!r}")
    clash = sorted(set(annotations) & set(SUBMIT_KEYS))
    if clash:
        raise ValueError(
            f"annotations must not set {clash}: use the options of that name (priority=, resources=, "
            f"workers=, allow_other_workers=, retries=), got annotations={annotations!r}"
        )
    return Placement(resources, int(priority), workers, allow, dict(annotations))


def _positive(value: object) -> bool:
    """Whether ``value`` is a number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, numbers.Real)):
        return False
    return math.isfinite(float(value)) and float(value) > 0
