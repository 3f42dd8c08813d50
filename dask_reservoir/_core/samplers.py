"""Samplers: the order in which entries are served and source rows are loaded.

A sampler maps ``(n, epoch)`` to a sequence of indices in ``range(n)``.  It is
stateless across calls: the same seed and epoch give the same indices, so two
reservoirs holding the same entries serve the same batches in epoch ``k``,
while successive epochs of one reservoir differ.

Samplers that depend on the source rows (:class:`WeightedSampler`,
:class:`BalancedSampler`) are *bound* to the reservoir's source when the
reservoir is built (:meth:`Sampler.bind`), and then receive the source
positions of the entries they order (``positions=``): as ``reservoir_sampler``
they order the reservoir's current members, as ``source_sampler`` all the
source rows (which rows get loaded more often).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol, Self, cast

import numpy as np
import pandas as pd

__all__ = [
    "BalancedSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "WeightedSampler",
    "check_sampler",
]


class Sampler:
    """Base class of samplers.

    Subclasses implement :meth:`indices`.  The reservoir checks every index it
    receives and raises ``ValueError`` for one outside ``range(n)``.
    """

    def indices(self, n: int, *, epoch: int) -> Sequence[int] | np.ndarray:
        """Indices into ``range(n)`` for epoch number ``epoch`` (0 for the first).

        A sequence of ints or an integer numpy array.
        """
        raise NotImplementedError

    uses_positions = False
    """Whether :meth:`indices` takes ``positions=``, the source positions of the entries ordered."""

    def bind(self, source: SourceColumns) -> Sampler:
        """The sampler to use with ``source`` (itself, unless it reads source columns)."""
        return self

    def subset(self, positions: Sequence[int]) -> Sampler:
        """The sampler for a source made of rows ``positions`` of this one (itself by default)."""
        return self

    def never_drawn(self, n: int) -> np.ndarray:
        """Source positions among ``range(n)`` this (bound) sampler never draws, in any epoch.

        Empty by default; a :class:`WeightedSampler` never draws the rows of weight 0.
        As ``source_sampler``, those rows are never loaded: the reservoir refuses a
        minimum they would be needed for.
        """
        return np.empty(0, np.int64)


class SourceColumns(Protocol):
    """What a sampler may read of a reservoir's source: its length, columns and UIDs."""

    uids: Sequence[Any]

    def __len__(self) -> int: ...

    @property
    def columns(self) -> list[str]: ...

    def column_values(self, name: str) -> Sequence[Any]: ...


class SequentialSampler(Sampler):
    """Indices in order, ``0 .. n-1``.

    Examples
    --------
    >>> list(SequentialSampler().indices(4, epoch=0))
    [0, 1, 2, 3]
    """

    def indices(self, n: int, *, epoch: int) -> Sequence[int]:
        """``range(n)``, whatever the epoch."""
        return range(n)

    def __repr__(self) -> str:
        return "SequentialSampler()"


def _check_seed(seed: object) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}: {seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return None if seed is None else int(seed)


def _check_count(num_samples: object) -> int | None:
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
    ):
        raise TypeError(
            f"num_samples must be an int or None, got {type(num_samples).__name__}: {num_samples!r}"
        )
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}")
    return None if num_samples is None else int(num_samples)


class _SeededSampler(Sampler):
    """Epoch ``k`` draws from ``numpy.random.default_rng([seed, k])``."""

    def __init__(self, seed: int | None) -> None:
        self.seed = _check_seed(seed)
        self._entropy = np.random.SeedSequence().entropy if seed is None else None

    def _rng(self, epoch: int) -> np.random.Generator:
        base: Any = self.seed if self.seed is not None else self._entropy
        return np.random.default_rng([base, epoch])

    @property
    def entropy(self) -> int | None:
        """The entropy an unseeded sampler drew at creation (None with a ``seed``).

        It plays the seed's part: :meth:`~dask_reservoir.AsyncReservoir.state_dict` saves
        it, so that a resumed run draws the same orders (:meth:`with_entropy`).
        """
        return cast(int | None, self._entropy)

    def with_entropy(self, entropy: int) -> Self:
        """A copy of this unseeded sampler drawing the orders of the one whose :attr:`entropy` this was.

        Raises
        ------
        ValueError
            When this sampler has a ``seed`` (its orders are fixed by it), or ``entropy`` is not an int >= 0.
        """
        if self.seed is not None:
            raise ValueError(f"{self!r} has a seed: its orders cannot take another entropy")
        if isinstance(entropy, bool) or not isinstance(entropy, (int, np.integer)) or entropy < 0:
            raise ValueError(f"entropy must be an int >= 0, got {entropy!r}")
        twin = copy.copy(self)
        twin._entropy = int(entropy)
        return twin

    def _bound(self, values: np.ndarray | None, n: int, positions: np.ndarray | None) -> np.ndarray:
        """``values`` (per source row, from :meth:`bind`) of the ``n`` entries at ``positions``."""
        if values is None:
            column = getattr(self, "column", None)
            raise ValueError(f"{self!r} reads the source column {column!r}: bind() it to a source first")
        return values[positions] if positions is not None else values[:n]


class RandomSampler(_SeededSampler):
    """Random order, with or without replacement.

    Parameters
    ----------
    replacement : bool
        False (default): a permutation of ``range(n)`` (repeated permutations
        when ``num_samples > n``).  True: ``num_samples`` independent draws.
    num_samples : int, optional
        Number of indices per epoch; default ``n``.
    seed : int, optional
        Seed of the random generator.  Epoch ``k`` draws from
        ``numpy.random.default_rng([seed, k])``, so it is reproducible and
        differs from epoch ``k + 1``.  None: fresh randomness.

    Examples
    --------
    >>> sampler = RandomSampler(seed=0)
    >>> sorted(sampler.indices(5, epoch=0).tolist())
    [0, 1, 2, 3, 4]
    >>> sampler.indices(5, epoch=0).tolist() == RandomSampler(seed=0).indices(5, epoch=0).tolist()
    True
    >>> len(RandomSampler(replacement=True, num_samples=8, seed=1).indices(3, epoch=0))
    8
    """

    def __init__(
        self, replacement: bool = False, num_samples: int | None = None, seed: int | None = None
    ) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be a bool, got {type(replacement).__name__}: {replacement!r}")
        self.num_samples = _check_count(num_samples)
        super().__init__(seed)  # without a seed, one entropy draw per sampler; epochs still differ
        self.replacement = replacement

    def indices(self, n: int, *, epoch: int) -> Sequence[int] | np.ndarray:
        """A permutation (or draws with replacement) of ``range(n)`` for ``epoch``."""
        if n == 0:
            return np.empty(0, np.int64)
        rng = self._rng(epoch)
        count = n if self.num_samples is None else self.num_samples
        if self.replacement:
            return rng.integers(0, n, size=count)
        if count == n:
            return rng.permutation(n)
        reps = -(-count // n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]

    def __repr__(self) -> str:
        return (
            f"RandomSampler(replacement={self.replacement}, num_samples={self.num_samples}, seed={self.seed})"
        )


def _source_values(source: SourceColumns, column: str, parameter: str) -> Sequence[Any]:
    if column not in source.columns:
        raise KeyError(f"{parameter}={column!r} is not a column of the source (columns: {source.columns!r})")
    return source.column_values(column)


class WeightedSampler(_SeededSampler):
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
        self.num_samples = _check_count(num_samples)
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


class BalancedSampler(_SeededSampler):
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
        self.num_samples = _check_count(num_samples)
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


def check_sampler(sampler: object, name: str) -> Sampler:
    """Return ``sampler`` (or a :class:`SequentialSampler` for None) after a type check.

    Any object with an ``indices(n, *, epoch)`` method is accepted.

    Examples
    --------
    >>> check_sampler(None, "reservoir_sampler")
    SequentialSampler()
    >>> check_sampler(3, "reservoir_sampler")
    Traceback (most recent call last):
    ...
    TypeError: reservoir_sampler must be None or a Sampler (an object with an indices(n, *, epoch) method), got int: 3
    """
    if sampler is None:
        return SequentialSampler()
    if not callable(getattr(sampler, "indices", None)):
        raise TypeError(
            f"{name} must be None or a Sampler (an object with an indices(n, *, epoch) method), "
            f"got {type(sampler).__name__}: {sampler!r}"
        )
    return sampler  # type: ignore[return-value]
