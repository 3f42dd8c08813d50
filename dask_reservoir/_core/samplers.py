"""Samplers: the order in which entries are served and source rows are loaded.

A sampler maps ``(n, epoch)`` to a sequence of indices in ``range(n)``.  It is
stateless across calls: the same seed and epoch give the same indices, so two
reservoirs holding the same entries serve the same batches in epoch ``k``,
while successive epochs of one reservoir differ.

This module holds the base :class:`Sampler`, the :class:`SequentialSampler` and
:class:`RandomSampler`, the :class:`SeededSampler` base of the random ones, and
:func:`check_sampler`.  Samplers that depend on the source rows
(:class:`~dask_reservoir._core.weighted.WeightedSampler`,
:class:`~dask_reservoir._core.weighted.BalancedSampler`) are *bound* to the
reservoir's source when the reservoir is built (:meth:`Sampler.bind`), and then
receive the source positions of the entries they order (``positions=``): as
``reservoir_sampler`` they order the reservoir's current members, as
``source_sampler`` all the source rows (which rows get loaded more often).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol, Self, cast

import numpy as np

__all__ = [
    "RandomSampler",
    "Sampler",
    "SeededSampler",
    "SequentialSampler",
    "SourceColumns",
    "check_count",
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


def check_count(num_samples: object) -> int | None:
    """``num_samples`` checked: an int >= 1, or None (as many indices as entries).

    Examples
    --------
    >>> check_count(None), check_count(np.int64(3))
    (None, 3)
    >>> check_count(0)
    Traceback (most recent call last):
    ...
    ValueError: num_samples must be >= 1 or None, got 0
    """
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
    ):
        raise TypeError(
            f"num_samples must be an int or None, got {type(num_samples).__name__}: {num_samples!r}"
        )
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}")
    return None if num_samples is None else int(num_samples)


class SeededSampler(Sampler):
    """Base of the random samplers: epoch ``k`` draws from ``numpy.random.default_rng([seed, k])``.

    Parameters
    ----------
    seed : int, optional
        Seed of every epoch's generator.  None: one entropy drawn at creation takes its
        part (:attr:`entropy`), so the epochs of one sampler still differ.

    Examples
    --------
    >>> a, b = RandomSampler(seed=4), RandomSampler(seed=4)
    >>> a.indices(6, epoch=1).tolist() == b.indices(6, epoch=1).tolist()
    True
    >>> unseeded = RandomSampler()
    >>> twin = RandomSampler().with_entropy(unseeded.entropy)
    >>> twin.indices(6, epoch=0).tolist() == unseeded.indices(6, epoch=0).tolist()
    True
    """

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


class RandomSampler(SeededSampler):
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
        self.num_samples = check_count(num_samples)
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
