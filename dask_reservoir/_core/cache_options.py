"""Validation of the persistent tier's options: ``cache``, ``cache_version``, ``cache_row_hash``, ``cache_storage_options``.

Pure code: it checks types and values only; whether the workers see the cache's
directory is checked when the reservoir starts (:mod:`~dask_reservoir._runtime.cache_check`).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["check_cache"]


def check_cache(k: dict[str, Any], *, batched: bool) -> dict[str, Any]:
    """The checked cache options of the parameters ``k``.

    Examples
    --------
    >>> check_cache({"cache": "memory://x", "cache_version": None, "cache_row_hash": True,
    ...              "cache_storage_options": None}, batched=False)["cache"]
    'memory://x'
    >>> check_cache({"cache": 3, "cache_version": None, "cache_row_hash": True,
    ...              "cache_storage_options": None}, batched=False)
    Traceback (most recent call last):
    ...
    TypeError: cache must be a path, an fsspec URL (str) or None, got int: 3
    """
    cache = k["cache"]
    if cache is not None:
        if not isinstance(cache, (str, os.PathLike)):
            raise TypeError(
                f"cache must be a path, an fsspec URL (str) or None, got {type(cache).__name__}: {cache!r}"
            )
        cache = os.fspath(cache)
        if not isinstance(cache, str) or not cache:
            raise ValueError(f"cache must be a non-empty path or URL, got {k['cache']!r}")
        if batched:
            raise ValueError(
                "cache= keeps the result of each source row, and batched=True computes chunks of rows: "
                "the two cannot be combined yet, got cache="
                f"{cache!r} with batched=True"
            )
    version = k["cache_version"]
    if version is not None and not isinstance(version, str):
        raise TypeError(f"cache_version must be a str or None, got {type(version).__name__}: {version!r}")
    row_hash = k["cache_row_hash"]
    if not isinstance(row_hash, bool):
        raise TypeError(f"cache_row_hash must be a bool, got {type(row_hash).__name__}: {row_hash!r}")
    storage = k["cache_storage_options"]
    if storage is not None and not isinstance(storage, dict):
        raise TypeError(
            f"cache_storage_options must be a dict or None, got {type(storage).__name__}: {storage!r}"
        )
    if cache is None and (version is not None or storage is not None):
        given = "cache_version" if version is not None else "cache_storage_options"
        raise ValueError(f"{given} is given but cache=None: set cache= to a path or URL, or drop {given}")
    return {
        "cache": cache,
        "cache_version": version,
        "cache_row_hash": row_hash,
        "cache_storage_options": None if storage is None else dict(storage),
    }
