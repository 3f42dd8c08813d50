"""The reservoir's resumable state, written by its parts and checked before it is applied.

Each part writes its own keys of the versioned JSON (the format and its checks are in
:mod:`~dask_reservoir._core.checkpoint`): the source's identity, the ledger's place in the
source order (:func:`ledger_state`), the store's members (:func:`members_state`), the
epochs (:meth:`~dask_reservoir._runtime.epochs.Epochs.state_dict`), the feeder's next exact
fill (:meth:`~dask_reservoir._runtime.feeder.Feeder.state_dict`) and the samplers' entropy
(:func:`samplers_state`).  Loading checks the whole state first
(:func:`~dask_reservoir._core.checkpoint.check_state`), then each part reads what it wrote.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, cast

from dask_reservoir._core.checkpoint import (
    STATE_FORMAT,
    STATE_VERSION,
    ResumePoint,
    jsonable_uid,
    order_digest,
    uids_digest,
)
from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.order import pass_order
from dask_reservoir._core.records import RunnerCounters
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.store import Entry
from dask_reservoir._runtime.protocols import LedgerLike
from dask_reservoir._source.pandas_source import Source

__all__ = [
    "KEY_ORDER",
    "header",
    "in_key_order",
    "ledger_state",
    "members_state",
    "resumed_samplers",
    "samplers_state",
]

logger = logging.getLogger("dask_reservoir")


KEY_ORDER = (
    "format",
    "version",
    "source",
    "rank",
    "world_size",
    "epoch",
    "epochs",
    "source_pass",
    "source_cursor",
    "source_order_sha256",
    "samplers",
    "next_fill",
    "pending_uids",
    "members",
    "quarantined",
    "counters",
)
"""The order of the keys in a saved state (the order version 2 has always written them in)."""


def in_key_order(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its keys in :data:`KEY_ORDER` (the parts write theirs part by part).

    Examples
    --------
    >>> list(in_key_order({"members": [], "format": "f", "epoch": 0}))
    ['format', 'epoch', 'members']
    """
    rank = {key: i for i, key in enumerate(KEY_ORDER)}
    return dict(sorted(state.items(), key=lambda item: rank.get(item[0], len(rank))))


def header(source: Source, options: ReservoirOptions) -> dict[str, Any]:
    """The format, its version, and what the state may be loaded on: the source and the rank."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "source": {
            "rows": len(source),
            "uid_column": options.uid_column,
            "uids_sha256": uids_digest(source.uids),
        },
        "rank": options.rank,
        "world_size": options.world_size,
    }


def ledger_state(ledger: LedgerLike, counters: RunnerCounters) -> dict[str, Any]:
    """The ledger's keys: its pass over the source, the cursor, the UIDs out, the quarantined UIDs."""
    source_pass, cursor, pending, order_sha256 = ledger.checkpoint()
    return {
        "source_pass": source_pass,
        "source_cursor": cursor,
        "source_order_sha256": order_sha256,
        "pending_uids": [jsonable_uid(u) for u in pending],
        "quarantined": [jsonable_uid(u) for u in counters.quarantined],
    }


def members_state(entries: Iterable[Entry]) -> dict[str, Any]:
    """The store's key: its members in ingestion order (the order of eviction), with age and use."""
    now = time.monotonic()
    return {
        "members": [
            {"uid": jsonable_uid(e.uid), "age_seconds": now - e.loaded_at, "times_served": e.times_served}
            for e in entries
        ]
    }


def samplers_state(source_sampler: Sampler, reservoir_sampler: Sampler) -> dict[str, Any]:
    """The samplers' key: the entropy each unseeded built-in sampler drew (decimal strings)."""
    return {
        "samplers": {
            "source_entropy": _saved_entropy(source_sampler),
            "reservoir_entropy": _saved_entropy(reservoir_sampler),
        }
    }


def resumed_samplers(
    source_sampler: Sampler,
    reservoir_sampler: Sampler,
    point: ResumePoint,
    *,
    source: Source,
    rank: int,
    world_size: int,
) -> tuple[Sampler, Sampler, ResumePoint]:
    """The source and reservoir samplers, and the point, that give the saving run's orders.

    Unseeded samplers take the saved entropy; the order of the interrupted pass must
    have the saved SHA-256 (``ValueError`` otherwise: rows would be skipped or loaded
    twice).  A version 1 state saved no entropy: with an unseeded source sampler the
    rest of its pass is unknown, so the resumed run starts the next pass (logged).
    """
    resumed_source = _with_entropy(source_sampler, point.source_entropy)
    resumed_reservoir = _with_entropy(reservoir_sampler, point.reservoir_entropy)
    if point.source_pass == 0:
        return resumed_source, resumed_reservoir, point
    if point.source_order_sha256 is not None:
        order = pass_order(resumed_source, len(source), point.source_pass - 1, rank, world_size)
        if order_digest(order) != point.source_order_sha256:
            raise ValueError(
                f"source_sampler={resumed_source!r} orders pass {point.source_pass - 1} differently from the "
                "run that saved the state (the SHA-256 of the pass order differs): where the pass stopped "
                "cannot be found, and rows would be skipped or loaded twice; resume with that run's "
                "source_sampler (the same seed, or none if it had none)"
            )
        point = replace(point, order=order)  # the ledger goes on in it: not drawn twice
    elif getattr(resumed_source, "entropy", None) is not None:
        logger.warning(
            "dask_reservoir: the state (version %d) holds no entropy of the unseeded source_sampler, so "
            "the order of its pass %d is unknown: the former members and the rows that were out are "
            "loaded again, then the next pass starts (rows of that pass not loaded yet wait for it)",
            point.version,
            point.source_pass - 1,
        )
        point = replace(point, source_cursor=sys.maxsize)
    return resumed_source, resumed_reservoir, point


def _saved_entropy(sampler: Sampler) -> str | None:
    """The entropy of an unseeded built-in sampler, as a state holds it (a decimal string), else None."""
    entropy = getattr(sampler, "entropy", None)
    return None if entropy is None else str(int(entropy))


def _with_entropy(sampler: Sampler, entropy: int | None) -> Sampler:
    """``sampler`` drawing with a saved ``entropy``, when both are unseeded (else ``sampler`` as is)."""
    if entropy is None or getattr(sampler, "entropy", None) is None:
        return sampler
    return cast(Sampler, sampler.with_entropy(entropy))  # type: ignore[attr-defined]
