"""Samplers that read a source column: drawn by weight, or balanced over classes.

:class:`WeightedSampler` draws entries with probability proportional to a weight per
source row; :class:`BalancedSampler` gives every class of a source column an equal
share of each epoch.  Both are *bound* to the reservoir's source
(:meth:`~dask_reservoir._core.samplers.Sampler.bind`) and then order entries by their
source ``positions=``; epoch ``k`` draws from ``numpy.random.default_rng([seed, k])``
(see :class:`~dask_reservoir._core.samplers.SeededSampler`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir._core.samplers import SeededSampler, SourceColumns, check_count

__all__ = ["BalancedSampler", "WeightedSampler"]


def _source_values(source: SourceColumns, column: str, parameter: str) -> Sequence[Any]:
    if column not in source.columns:
        raise KeyError(f"{parameter}={column!r} is not a column of the source (columns: {source.columns!r})")
    return source.column_values(column)


class WeightedSampler(SeededSampler):
    """Entries drawn with probability proportional to a weight per source row.

    Parameters
    ----------
    weights : str or array-like
        A column of the source (by name), or one weight per source row, in source
        order.  Non-negative and finite, not all zero.
    replacement : bool
        True (default): ``num_samples`` independent draws.  False: a weighted
        permutation of the entries of non-zero weight (at most ``num_samples``).
    num_samples : int, optional
        Indices per epoch; default the number of entries ordered.
    seed : int, optional
        Seed; epoch ``k`` is reproducible and differs from epoch ``k + 1``.

    Raises
    ------
    ValueError
        When bound to a source whose length differs from ``weights``, or for
        negative, NaN, infinite or all-zero weights; and at an epoch whose entries
        all weigh 0.
    KeyError
        When ``weights`` names a column the source does not have.

    Examples
    --------
    >>> sampler = WeightedSampler([0.0, 1.0, 3.0], seed=0)
    >>> draws = sampler.indices(3, epoch=0, positions=np.array([0, 1, 2]))
    >>> len(draws), 0 in draws.tolist()  # the weight-0 row is never drawn
    (3, False)
    >>> WeightedSampler([1.0, -1.0])
    Traceback (most recent call last):
    ...
    ValueError: weights must be >= 0, got -1.0 at source position 1
    """

    def __init__(
        self,
        weights: str | Sequence[float] | np.ndarray,
        *,
        replacement: bool = True,
        num_samples: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be a bool, got {type(replacement).__name__}: {replacement!r}")
        self.replacement = replacement
        self.num_samples = check_count(num_samples)
        self.column: str | None = weights if isinstance(weights, str) else None
        self._weights: np.ndarray | None = None if self.column is not None else _check_weights(weights)

    uses_positions = True

    def subset(self, positions: Sequence[int]) -> WeightedSampler:
        """Weights given as values keep those of rows ``positions``; a column is read again."""
        if self.column is not None or self._weights is None:
            return self
        sub = copy.copy(self)
        sub._weights = _check_weights(self._weights[np.asarray(positions, dtype=np.int64)])
        return sub

    def bind(self, source: SourceColumns) -> WeightedSampler:
        """A copy holding the weight of each of ``source``'s rows (checked)."""
        weights = (
            _check_weights(_source_values(source, self.column, "weights"))
            if self.column is not None
            else self._weights
        )
        if weights is None or len(weights) != len(source):
            got = "?" if weights is None else len(weights)
            raise ValueError(
                f"weights has {got} values but the source has {len(source)} rows: give one per row"
            )
        bound = copy.copy(self)
        bound._weights = weights
        return bound

    def never_drawn(self, n: int) -> np.ndarray:
        """Positions of the rows of weight 0 (bound), or too small beside the largest to be drawn."""
        if self._weights is None or len(self._weights) != n:
            return np.empty(0, np.int64)
        top = float(self._weights.max()) if n else 0.0
        if top <= 0:
            return np.arange(n, dtype=np.int64)
        return np.flatnonzero(_probabilities(self._weights, top) == 0).astype(np.int64)

    def indices(self, n: int, *, epoch: int, positions: np.ndarray | None = None) -> np.ndarray:
        """Weighted draws among ``n`` entries, at source ``positions`` (default ``0 .. n - 1``)."""
        w = self._bound(self._weights, n, positions)
        if n == 0:
            return np.empty(0, np.int64)
        top = float(w.max())
        if top <= 0:
            raise ValueError(f"all {n} entries ordered by {self!r} have weight 0: nothing can be drawn")
        p = _probabilities(w, top)
        count = n if self.num_samples is None else self.num_samples
        rng = self._rng(epoch)
        if self.replacement:
            return rng.choice(n, size=count, p=p)
        count = min(count, int(np.count_nonzero(p)))
        return rng.choice(n, size=count, replace=False, p=p)

    def __repr__(self) -> str:
        what = (
            repr(self.column)
            if self.column is not None
            else f"<{0 if self._weights is None else len(self._weights)} weights>"
        )
        return (
            f"WeightedSampler({what}, replacement={self.replacement}, num_samples={self.num_samples}, "
            f"seed={self.seed})"
        )


def _probabilities(weights: np.ndarray, top: float) -> np.ndarray:
    """The draw probabilities of ``weights`` (largest ``top > 0``).

    Scaled to ``[0, 1]`` first, so that a sum of weights near the float maximum does not
    overflow; a weight too small beside the largest (``1e-300`` beside ``1e308``) becomes a
    probability of exactly 0, and its row is never drawn, like a weight of 0.

    Examples
    --------
    >>> _probabilities(np.array([1e308, 1e308, 1e-300]), 1e308).tolist()
    [0.5, 0.5, 0.0]
    """
    p = weights / top
    p /= p.sum()
    return p


def _check_weights(values: Any) -> np.ndarray:
    try:
        weights = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"weights must be numbers, got {type(values).__name__} ({exc})") from None
    if weights.ndim != 1:
        raise ValueError(f"weights must be one-dimensional, got shape {weights.shape}")
    bad = np.flatnonzero(~np.isfinite(weights))
    if bad.size:
        raise ValueError(f"weights must be finite, got {weights[bad[0]]} at source position {int(bad[0])}")
    negative = np.flatnonzero(weights < 0)
    if negative.size:
        raise ValueError(
            f"weights must be >= 0, got {weights[negative[0]]} at source position {int(negative[0])}"
        )
    if weights.size and not weights.any():
        raise ValueError(f"weights must not all be 0 ({weights.size} weights of 0)")
    weights.flags.writeable = False
    return weights


class BalancedSampler(SeededSampler):
    """An epoch order in which every class of a source column appears equally often.

    Each epoch draws ``num_samples`` indices (default: the number of entries
    ordered), split as evenly as possible among the classes present among the
    entries; within a class, entries are taken in a random order, repeated when
    the class has fewer entries than its share.  The draws are then shuffled.
    With fewer draws than classes, each epoch draws one entry from each of
    ``num_samples`` classes chosen at random (different classes in other epochs).

    Parameters
    ----------
    column : str
        The source column holding each row's class; NaN/None are refused.
    num_samples : int, optional
        Indices per epoch.
    seed : int, optional
        Seed; epoch ``k`` is reproducible.

    Examples
    --------
    >>> sampler = BalancedSampler("label", seed=0)
    >>> sampler._classes = np.array([0, 0, 0, 0, 1, 1])  # bound: four rows of class 0, two of 1
    >>> order = sampler.indices(6, epoch=0, positions=np.arange(6))
    >>> np.bincount(sampler._classes[order]).tolist()
    [3, 3]
    """

    def __init__(self, column: str, *, num_samples: int | None = None, seed: int | None = None) -> None:
        super().__init__(seed)
        if not isinstance(column, str) or not column:
            raise TypeError(f"column must be a non-empty str, got {type(column).__name__}: {column!r}")
        self.column = column
        self.num_samples = check_count(num_samples)
        self._classes: np.ndarray | None = None

    uses_positions = True

    def bind(self, source: SourceColumns) -> BalancedSampler:
        """A copy holding the class of each of ``source``'s rows (NaN/None refused, naming UIDs)."""
        values = pd.Series(list(_source_values(source, self.column, "column")), dtype=object)
        missing = np.flatnonzero(values.isna().to_numpy())
        if missing.size:
            uids = [source.uids[i] for i in missing[:5].tolist()]
            raise ValueError(
                f"the balance column {self.column!r} has {missing.size} missing values (NaN/None), at UIDs "
                f"{uids!r}: every row needs a class"
            )
        bound = copy.copy(self)
        bound._classes = pd.factorize(values)[0].astype(np.int64)
        return bound

    def indices(self, n: int, *, epoch: int, positions: np.ndarray | None = None) -> np.ndarray:
        """Equal shares per class among ``n`` entries at source ``positions``."""
        classes = self._bound(self._classes, n, positions)
        if n == 0:
            return np.empty(0, np.int64)
        present, inverse = np.unique(classes, return_inverse=True)
        count = n if self.num_samples is None else self.num_samples
        rng = self._rng(epoch)
        shares = np.full(len(present), count // len(present))
        shares[rng.permutation(len(present))[: count % len(present)]] += 1
        out = []
        for k, share in enumerate(shares.tolist()):
            if share == 0:  # fewer draws than classes: this class gets none this epoch
                continue
            members = np.flatnonzero(inverse == k)
            reps = -(-share // len(members))
            out.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:share])
        order = np.concatenate(out)
        return order[rng.permutation(len(order))]

    def __repr__(self) -> str:
        return f"BalancedSampler({self.column!r}, num_samples={self.num_samples}, seed={self.seed})"
