"""The analysts' methods of ``AsyncReservoir``: entries as a DataFrame, subsets by UID, one-pass runs.

A mixin of the facade (:mod:`dask_reservoir.reservoir`): each method checks what the
user gives and delegates to the reservoir's :class:`~dask_reservoir._runtime.pipeline.Pipeline`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Self

import pandas as pd

from dask_reservoir._core.frames import load_time_column
from dask_reservoir._core.options import check_seconds
from dask_reservoir._core.samplers import Sampler, check_sampler
from dask_reservoir._core.stats import ReservoirStats
from dask_reservoir._core.subsets import positions_by_values, random_positions
from dask_reservoir._runtime.one_pass import wait_loaded

if TYPE_CHECKING:
    from dask_reservoir._runtime.pipeline import Pipeline

__all__ = ["AnalysisMethods"]


class AnalysisMethods:
    """``to_pandas``, ``reservoir_size``, ``subsample``, ``subsample_uids`` and ``wait_loaded``."""

    _p: Pipeline

    @classmethod
    def _of(cls, pipeline: Pipeline) -> Self:  # pragma: no cover - defined by the facade
        raise NotImplementedError

    # ------------------------------------------------------------------ reading entries
    def to_pandas(
        self, uids: Iterable[Hashable] | None = None, *, loaded_at: bool | str = True
    ) -> pd.DataFrame:
        """The loaded entries as one DataFrame, now, without waiting for loading.

        One row per produced row: the entries of all loaded UIDs in source order, or of
        ``uids`` in their order (those not loaded now are absent: compare with the UID
        column).  Columns as in a ``batch_format="pandas"`` batch (the UID column with the
        source UID column's dtype), plus one column of ``Timestamp`` saying when each
        entry's job finished, named ``"loaded_at"`` by default.  The reservoir is not changed.

        Parameters
        ----------
        uids : iterable, optional
            UIDs to return, in this order; default all loaded entries.
        loaded_at : bool or str, keyword-only
            The name of the load-time column (True: ``"loaded_at"``), or False for none.
            Like ``indicator=`` of :func:`pandas.merge`, it never replaces a column of
            yours: when ``function_to_run`` produces a column of that name, pass another
            name or False.

        Raises
        ------
        KeyError
            When some of ``uids`` are not UIDs of the source (naming them).
        ValueError
            When the load-time column's name is the UID column or a column the entries
            hold (naming it).
        TypeError
            When ``loaded_at`` is not a bool or a non-empty str.
        """
        self._p.check_open()
        return self._p.frame(uids, load_time_column(loaded_at, self._p.options.uid_column))

    def reservoir_size(self) -> int:
        """Number of entries in the reservoir now."""
        return len(self._p.store)

    # ------------------------------------------------------------------ subsets
    def subsample(self, nb_samples: int, seed: int | None = None) -> Self:
        """A new reservoir on ``nb_samples`` source rows drawn without replacement.

        Same client and settings; it starts with the entries already loaded here for
        its UIDs (their jobs are not re-run on the first pass).

        Parameters
        ----------
        nb_samples : int
            Rows to draw, ``1 <= nb_samples <= len(source)``.
        seed : int, optional
            Seed of the draw.
        """
        self._p.check_open()
        positions = random_positions(len(self._p.source), nb_samples, seed)
        return self._subset(positions, self._p.given_samplers[0].subset(positions))

    def subsample_uids(
        self, uids: Iterable[Hashable], uids_name: str | None = None, new_sampler: Sampler | None = None
    ) -> Self:
        """A new reservoir on the source rows whose ``uids_name`` column is in ``uids``.

        Rows are submitted (and, with a :class:`SequentialSampler`, served) in the order
        of ``uids``.  Entries already loaded here for those UIDs are reused.

        Parameters
        ----------
        uids : iterable
            Values to select, in order.
        uids_name : str, optional
            Column to match; default ``uid_column``.
        new_sampler : Sampler, optional
            Sampler of the new reservoir; default this reservoir's.

        Raises
        ------
        KeyError
            When some of ``uids`` are absent from the column (naming them).
        ValueError
            When ``uids_name`` is not a column of the source, or ``uids`` is empty.
        """
        p = self._p
        p.check_open()
        given = None if new_sampler is None else check_sampler(new_sampler, "new_sampler")
        column = p.options.uid_column if uids_name is None else uids_name
        positions = positions_by_values(
            p.source, uids, column, uid_column=p.options.uid_column, scheduler=p.handle.client
        )
        return self._subset(positions, p.given_samplers[0].subset(positions) if given is None else given)

    def _subset(self, positions: list[int], sampler: Sampler) -> Self:
        child = type(self)._of(self._p.subset(positions, sampler))
        self._p.children.add(child)
        return child

    # ------------------------------------------------------------------ one-pass runs
    def wait_loaded(
        self, *, timeout: float | str | None = None, progress: bool | None = None
    ) -> ReservoirStats:
        """With ``passes=``: wait until every pass is loaded, ingesting results as they come.

        Then the reservoir holds everything loaded (up to ``max_reservoir_samples`` and
        ``max_reservoir_bytes``: set them to hold every row), :meth:`to_pandas` and
        :meth:`subsample_uids` see all of it, and no job runs any more.  Rows that failed
        are in ``stats().failures``.  Epochs still serve what is loaded.  When results wait
        for room that entries read by an epoch hold, the epoch prepared ahead is dropped and
        held iterators are expired, oldest first (their next ``next()`` raises
        :class:`~dask_reservoir.errors.IteratorExpiredError`).

        Parameters
        ----------
        timeout : float or str, optional
            Seconds (or a str like ``"5min"``) to wait at most; default no limit.
        progress : bool, optional
            Show a progress bar in source rows (tqdm when installed); default the
            reservoir's ``progress`` option.

        Returns
        -------
        ReservoirStats
            The counters once loading is done (``loading_done`` is True).

        Raises
        ------
        ValueError
            When the reservoir has no ``passes`` (it loads forever).
        TimeoutError
            When ``timeout`` passes first; what is loaded stays in the reservoir.

        Examples
        --------
        >>> import pandas as pd
        >>> from distributed import Client, LocalCluster
        >>> from dask_reservoir import AsyncReservoir
        >>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
        >>> client = Client(cluster, set_as_default=False)
        >>> frame = pd.DataFrame({"sample_uid": [10, 11, 12], "v": [1, 2, 3]})
        >>> with AsyncReservoir(frame, lambda row: {"sq": row["v"] ** 2}, 3, passes=1, client=client) as r:
        ...     stats = r.wait_loaded(timeout=60)
        ...     table = r.to_pandas(loaded_at=False)
        >>> stats.loading_done, stats.rows_loaded, table["sq"].tolist()
        (True, 3, [1, 4, 9])
        >>> client.close(); cluster.close()
        """
        self._p.check_open()
        seconds = check_seconds("timeout", timeout, zero=True)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool or None, got {type(progress).__name__}: {progress!r}")
        shown = self._p.options.progress if progress is None else progress
        return wait_loaded(self._p, timeout=seconds, progress=shown)
