"""Validation of ``AsyncReservoir`` parameters: each rule stated with the value received.

Pure code.  :func:`validate_options` returns a frozen :class:`ReservoirOptions`
or raises ``TypeError``/``ValueError`` naming the parameter.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from dask.utils import parse_bytes, parse_timedelta

from dask_reservoir._core.cache_options import check_cache
from dask_reservoir._core.deprecations import max_jobs_meaning, warn_future
from dask_reservoir._core.etiquette import Placement, check_etiquette
from dask_reservoir._core.formats import check_batch_format
from dask_reservoir._core.shards import check_rank

__all__ = [
    "DEFAULTS",
    "LOADERS",
    "ON_CLUSTER_LOSS",
    "ON_ERROR",
    "ReservoirOptions",
    "placement",
    "validate_options",
]

ON_ERROR = ("skip", "raise")
ON_CLUSTER_LOSS = ("raise", "serve")
LOADERS = ("auto", "process", "thread")


@dataclass(frozen=True)
class ReservoirOptions:
    """Checked settings of a reservoir (see ``AsyncReservoir`` for their meaning).

    The one place where each option's default is written: ``AsyncReservoir``'s
    signature is checked against these defaults by ``tests/test_options.py``.
    """

    max_reservoir_samples: int
    min_reservoir_samples: int = 1
    uid_column: str = "sample_uid"
    max_jobs_at_once: int | None = None
    batch_size: int = 1
    drop_last: bool = False
    collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None
    maximum_number_of_samples_per_epoch: int | None = None
    max_reservoir_replacement_size: int | None = None
    rows_per_job: int | None = None  # None: "auto", sized from measured row costs
    retries: int = 0
    on_error: str = "skip"
    timeout: float | None = None
    max_failures_per_uid: int | None = 3
    on_cluster_loss: str = "raise"
    nb_workers: int | None = None
    job_timeout: float | None = None
    loader: str | None = None  # None: the dask config "dask_reservoir.loader", default "thread"
    rank: int = 0
    world_size: int = 1
    deterministic: bool = False
    batch_format: str = "numpy"
    batched: bool = False
    progress: bool = False
    prefetch_batches: int = 2
    max_stale_epochs: int = 2
    passes: int | None = None
    transform: Callable[[Any, Any], Any] | None = None
    transform_batched: bool = False
    transform_seed: int | None = None
    cache: str | None = None
    cache_version: str | None = None
    cache_row_hash: bool = True
    cache_storage_options: dict[str, Any] | None = None
    max_reservoir_bytes: int | None = None
    resources: dict[str, float] | None = None
    priority: int = 0
    workers: str | list[str] | None = None
    allow_other_workers: bool = False
    annotations: dict[str, Any] | None = None
    upload_code: bool = True


_NOT_GIVEN: Any = object()

DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in fields(ReservoirOptions) if f.default is not MISSING},
    "rows_per_job": "auto",  # how the parameter spells the field's None
}
"""Default of each parameter, from :class:`ReservoirOptions` (as ``AsyncReservoir`` spells it)."""


def _int(name: str, value: object, *, minimum: int, optional: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{' or None' if optional else ''}, got {value}")
    return int(value)


def _opt_int(name: str, value: object, *, minimum: int) -> int | None:
    return None if value is None else _int(name, value, minimum=minimum, optional=True)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def check_seconds(name: str, value: object, *, zero: bool = False) -> float | None:
    """``None`` or a positive duration in seconds (``zero``: or 0); strings such as ``"30s"`` via dask."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise TypeError(
            f"{name} must be seconds (a number or a str like '30s') or None, got {type(value).__name__}: {value!r}"
        )
    if isinstance(value, str):
        try:
            seconds = float(parse_timedelta(value, default="seconds"))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{name} must be seconds (a number or a str like '30s'), got {value!r}") from exc
    else:
        seconds = float(value)
    if not (seconds >= 0 if zero else seconds > 0):
        raise ValueError(f"{name} must be {'>=' if zero else '>'} 0 seconds or None, got {value!r}")
    return seconds


def validate_options(*, function: object = _NOT_GIVEN, **kwargs: Any) -> ReservoirOptions:
    """Check every parameter (and ``function_to_run`` when given); see ``AsyncReservoir`` for the rules.

    The checks run in the order ``AsyncReservoir`` has always used, so the first of several bad
    arguments is the one reported.

    Examples
    --------
    >>> validate_options(max_reservoir_samples=8, min_reservoir_samples=10)
    Traceback (most recent call last):
    ...
    ValueError: min_reservoir_samples must be <= max_reservoir_samples, got min_reservoir_samples=10 > max_reservoir_samples=8
    >>> validate_options(max_reservoir_samples=8, timeout="2s").timeout
    2.0
    """
    k = dict(DEFAULTS)
    unknown = set(kwargs) - set(k) - {"max_reservoir_samples"}
    if unknown:  # pragma: no cover - guarded by the AsyncReservoir signature
        raise TypeError(f"unknown options {sorted(unknown)}")
    k.update(kwargs)
    max_samples = _int("max_reservoir_samples", k["max_reservoir_samples"], minimum=1)
    min_samples = _int("min_reservoir_samples", k["min_reservoir_samples"], minimum=1)
    if min_samples > max_samples:
        raise ValueError(
            "min_reservoir_samples must be <= max_reservoir_samples, got "
            f"min_reservoir_samples={min_samples} > max_reservoir_samples={max_samples}"
        )
    uid_column = k["uid_column"]
    if not isinstance(uid_column, str) or not uid_column:
        raise TypeError(
            f"uid_column must be a non-empty str, got {type(uid_column).__name__}: {uid_column!r}"
        )
    rows_per_job: int | None = None
    if k["rows_per_job"] != "auto":
        if isinstance(k["rows_per_job"], str):
            raise ValueError(f"rows_per_job must be an int >= 1 or 'auto', got {k['rows_per_job']!r}")
        rows_per_job = _int("rows_per_job", k["rows_per_job"], minimum=1)
    max_jobs = _opt_int("max_jobs_at_once", k["max_jobs_at_once"], minimum=1)
    warn_future(max_jobs_meaning(max_jobs, rows_per_job))
    batch_size = _int("batch_size", k["batch_size"], minimum=1)
    if not isinstance(k["drop_last"], bool):
        raise TypeError(f"drop_last must be a bool, got {type(k['drop_last']).__name__}: {k['drop_last']!r}")
    collate_fn = k["collate_fn"]
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(
            f"collate_fn must be callable or None, got {type(collate_fn).__name__}: {collate_fn!r}"
        )
    rank, world_size = check_rank(k["rank"], k["world_size"])
    if not isinstance(k["deterministic"], bool):
        raise TypeError(
            f"deterministic must be a bool, got {type(k['deterministic']).__name__}: {k['deterministic']!r}"
        )
    if k["deterministic"] and k["max_reservoir_replacement_size"] is None:
        raise ValueError(
            "deterministic=True needs max_reservoir_replacement_size (the entries each iter() ingests, "
            "exactly), got max_reservoir_replacement_size=None"
        )
    if not isinstance(k["batched"], bool):
        raise TypeError(f"batched must be a bool, got {type(k['batched']).__name__}: {k['batched']!r}")
    timeout = check_seconds("timeout", k["timeout"])
    job_timeout = check_seconds("job_timeout", k["job_timeout"])
    checked = dict(
        max_reservoir_samples=max_samples,
        min_reservoir_samples=min_samples,
        uid_column=uid_column,
        max_jobs_at_once=max_jobs,
        batch_size=batch_size,
        drop_last=k["drop_last"],
        collate_fn=collate_fn,
        maximum_number_of_samples_per_epoch=_opt_int(
            "maximum_number_of_samples_per_epoch", k["maximum_number_of_samples_per_epoch"], minimum=1
        ),
        max_reservoir_replacement_size=_opt_int(
            "max_reservoir_replacement_size", k["max_reservoir_replacement_size"], minimum=1
        ),
        rows_per_job=rows_per_job,
        retries=_int("retries", k["retries"], minimum=0),
        on_error=_choice("on_error", k["on_error"], ON_ERROR),
        timeout=timeout,
        max_failures_per_uid=_opt_int("max_failures_per_uid", k["max_failures_per_uid"], minimum=1),
        on_cluster_loss=_choice("on_cluster_loss", k["on_cluster_loss"], ON_CLUSTER_LOSS),
        nb_workers=_opt_int("nb_workers", k["nb_workers"], minimum=1),
        job_timeout=job_timeout,
        loader=None if k["loader"] is None else _choice("loader", k["loader"], LOADERS),
        rank=rank,
        world_size=world_size,
        deterministic=k["deterministic"],
        batch_format=check_batch_format(k["batch_format"], custom_collate=collate_fn is not None),
        batched=k["batched"],
    )
    if function is not _NOT_GIVEN and not callable(function):
        raise TypeError(f"function_to_run must be callable, got {type(function).__name__}: {function!r}")
    _check_serving(k)  # last, as AsyncReservoir always checked them
    return ReservoirOptions(
        **checked,
        progress=k["progress"],
        prefetch_batches=k["prefetch_batches"],
        max_stale_epochs=k["max_stale_epochs"],
        passes=_opt_int("passes", k["passes"], minimum=1),
        **_check_transform(k),
        **check_cache(k, batched=k["batched"]),
        max_reservoir_bytes=_bytes("max_reservoir_bytes", k["max_reservoir_bytes"]),
        **_etiquette(k),
    )


def _etiquette(k: dict[str, Any]) -> dict[str, Any]:
    """The etiquette options, checked (:func:`~dask_reservoir._core.etiquette.check_etiquette`)."""
    p = check_etiquette(k)
    workers = None if p.workers is None else list(p.workers)
    return dict(
        resources=p.resources,
        priority=p.priority,
        workers=workers,
        allow_other_workers=p.allow_other_workers,
        annotations=p.annotations or None,
        upload_code=_bool("upload_code", k["upload_code"]),
    )


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}: {value!r}")
    return value


def _bytes(name: str, value: object) -> int | None:
    """``None`` or a positive size in bytes; strings such as ``"4 GiB"`` via dask's ``parse_bytes``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise TypeError(
            f"{name} must be bytes (an int or a str like '4GiB') or None, got {type(value).__name__}: {value!r}"
        )
    try:
        size = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be bytes (an int or a str like '4GiB'), got {value!r}") from exc
    if size < 1:
        raise ValueError(f"{name} must be >= 1 byte or None, got {value!r}")
    return size


def _check_transform(k: dict[str, Any]) -> dict[str, Any]:
    """``transform``, ``transform_batched`` and ``transform_seed``: the stage applied at every serve."""
    transform = k["transform"]
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}: {transform!r}")
    if not isinstance(k["transform_batched"], bool):
        raise TypeError(
            f"transform_batched must be a bool, got {type(k['transform_batched']).__name__}: "
            f"{k['transform_batched']!r}"
        )
    seed = k["transform_seed"]
    if seed is not None:
        seed = _int("transform_seed", seed, minimum=0)
    return {"transform": transform, "transform_batched": k["transform_batched"], "transform_seed": seed}


def _check_serving(k: dict[str, Any]) -> None:
    """``progress``, ``prefetch_batches`` and ``max_stale_epochs``: how epochs are served."""
    progress, prefetch, max_stale = k["progress"], k["prefetch_batches"], k["max_stale_epochs"]
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}: {progress!r}")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int):
        raise TypeError(f"prefetch_batches must be an int, got {type(prefetch).__name__}: {prefetch!r}")
    if prefetch < 0:
        raise ValueError(f"prefetch_batches must be >= 0 (0: build each batch in next()), got {prefetch}")
    if isinstance(max_stale, bool) or not isinstance(max_stale, int):
        raise TypeError(f"max_stale_epochs must be an int, got {type(max_stale).__name__}: {max_stale!r}")
    if max_stale < 0:
        raise ValueError(
            f"max_stale_epochs must be >= 0 (newer epochs an iterator may fall behind), got {max_stale}"
        )


def placement(options: ReservoirOptions) -> Placement:
    """Where and how urgently a reservoir's tasks run (its etiquette options)."""
    workers = None if options.workers is None else tuple(options.workers)
    return Placement(
        options.resources,
        options.priority,
        workers,
        options.allow_other_workers,
        dict(options.annotations or {}),
    )
