"""One-pass runs (``passes=``): wait until every pass is loaded, ingesting as results come.

The runner stops submitting once its ledger's cursor is through the last pass
(:attr:`~dask_reservoir._core.ledger.cursor.SourceCursor.exhausted`);
:func:`wait_loaded` moves every result into the store as it arrives, with a
deadline, and reports progress in source rows.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dask_reservoir._core.order import pass_order
from dask_reservoir._core.stats import ReservoirStats
from dask_reservoir._runtime.progress import WaitProgress
from dask_reservoir._runtime.protocols import loading_over

if TYPE_CHECKING:
    from dask_reservoir._runtime.pipeline import Pipeline

__all__ = ["WAIT_SLICE", "wait_loaded"]

WAIT_SLICE = 0.1
"""Longest single wait for results: the deadline and the runner's health are checked between."""


def rows_to_load(pipeline: Pipeline) -> int:
    """Source rows this rank loads over its ``passes``."""
    options, n = pipeline.options, len(pipeline.source)
    passes = options.passes or 0
    sampler = pipeline.source_sampler
    return sum(len(pass_order(sampler, n, k, options.rank, options.world_size)) for k in range(passes))


def wait_loaded(pipeline: Pipeline, *, timeout: float | None, progress: bool) -> ReservoirStats:
    """Ingest results as they come until every pass is loaded; the stats then.

    Raises
    ------
    ValueError
        Without ``passes=`` (the reservoir loads forever).
    TimeoutError
        When ``timeout`` seconds pass first (the loaded entries stay ingested).
    """
    options = pipeline.options
    if options.passes is None:
        raise ValueError(
            "wait_loaded() needs passes= (the passes over the source to load, then stop): "
            "this reservoir has passes=None and loads forever"
        )
    total = rows_to_load(pipeline) if progress else 0
    report = WaitProgress(total, enabled=progress, goal=f"passes={options.passes} to end", unit="rows")
    start = time.monotonic()
    pipeline.epochs.drop_prepared()  # its snapshot predates what this ingests: it would pin it
    try:
        while True:
            pipeline.check_usable()
            with pipeline.lock:
                pipeline.feeder.ingest(capped=False)
                if pipeline.store.room() <= 0 and pipeline.runner.ledger.has_waiting():
                    # what waits must come in: an epoch prepared ahead, or a held iterator, must not pin it out
                    pipeline.epochs.expire_for_room(by="wait_loaded()")
            counters = pipeline.runner.ledger.counters()
            report.update(counters.rows_loaded + counters.rows_failed)
            if loading_over(pipeline.runner.ledger):
                with pipeline.lock:  # what arrived between the two looks
                    pipeline.feeder.ingest(capped=False)
                return pipeline.stats()
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed >= timeout:
                raise TimeoutError(
                    f"wait_loaded() waited {timeout:g} s (timeout) for passes={options.passes} to end; "
                    f"{pipeline.stats().summary()}"
                )
            pipeline.runner.wait(WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed))
    finally:
        report.close()
