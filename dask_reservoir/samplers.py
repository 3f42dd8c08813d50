"""Samplers: the order in which entries are served and source rows are loaded.

A sampler maps ``(n, epoch)`` to a sequence of indices in ``range(n)``.  It is
stateless across calls: the same seed and epoch give the same indices, so two
reservoirs holding the same entries serve the same batches in epoch ``k``,
while successive epochs of one reservoir differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RandomSampler", "Sampler", "SequentialSampler", "check_sampler"]


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


class RandomSampler(Sampler):
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
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
        ):
            raise TypeError(
                f"num_samples must be an int or None, got {type(num_samples).__name__}: {num_samples!r}"
            )
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 or None, got {num_samples}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}: {seed!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.replacement = replacement
        self.num_samples = None if num_samples is None else int(num_samples)
        self.seed = None if seed is None else int(seed)
        # without a seed, one entropy draw per sampler; epochs still differ
        self._entropy = np.random.SeedSequence().entropy if seed is None else None

    def _rng(self, epoch: int) -> np.random.Generator:
        base: Any = self.seed if self.seed is not None else self._entropy
        return np.random.default_rng([base, epoch])

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
