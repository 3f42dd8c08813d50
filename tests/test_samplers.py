"""Samplers: reproducibility and seeded statistics (pure, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_reservoir import RandomSampler, SequentialSampler
from dask_reservoir.samplers import check_sampler


def test_sequential() -> None:
    assert list(SequentialSampler().indices(5, epoch=3)) == [0, 1, 2, 3, 4]
    assert list(SequentialSampler().indices(0, epoch=0)) == []


def test_random_on_zero_and_one_rows() -> None:
    for sampler in (RandomSampler(seed=0), RandomSampler(replacement=True, seed=0)):
        empty = np.asarray(sampler.indices(0, epoch=0))
        assert empty.shape == (0,) and empty.dtype == np.int64
        assert np.asarray(sampler.indices(1, epoch=0)).tolist() == [0]
    assert np.asarray(RandomSampler(num_samples=3, seed=0).indices(0, epoch=0)).tolist() == []


def test_random_without_replacement_is_a_permutation() -> None:
    for epoch in range(20):
        assert sorted(RandomSampler(seed=1).indices(17, epoch=epoch)) == list(range(17))


def test_seed_reproducible_per_epoch_and_epochs_differ() -> None:
    a, b = RandomSampler(seed=42), RandomSampler(seed=42)
    assert [list(a.indices(50, epoch=e)) for e in range(3)] == [
        list(b.indices(50, epoch=e)) for e in range(3)
    ]
    assert list(a.indices(50, epoch=0)) != list(a.indices(50, epoch=1))
    assert list(RandomSampler(seed=1).indices(50, epoch=0)) != list(
        RandomSampler(seed=2).indices(50, epoch=0)
    )


def test_unseeded_epochs_differ() -> None:
    s = RandomSampler()
    assert list(s.indices(50, epoch=0)) != list(s.indices(50, epoch=1))


def test_num_samples_without_replacement_repeats_permutations() -> None:
    idx = list(RandomSampler(num_samples=10, seed=3).indices(4, epoch=0))
    assert len(idx) == 10
    assert sorted(idx[:4]) == [0, 1, 2, 3] and sorted(idx[4:8]) == [0, 1, 2, 3]
    assert len(set(RandomSampler(num_samples=3, seed=3).indices(10, epoch=0))) == 3
    (one,) = RandomSampler(num_samples=1, seed=3).indices(10, epoch=0)  # 1 is a valid count
    assert 0 <= one < 10


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_uniform_with_replacement_chi_square() -> None:
    """200 000 independent draws over 20 bins: a two-sided chi-square test at 0.001 per side.

    19 dof: the 0.001 and 0.999 quantiles are 5.41 and 43.82.  The lower bound matters:
    repeated permutations (no replacement) give perfectly even counts, chi-square 0.
    """
    n, draws = 20, 200_000
    idx = np.asarray(RandomSampler(replacement=True, num_samples=draws, seed=7).indices(n, epoch=0))
    chi2 = chi_square(np.bincount(idx, minlength=n))
    assert 5.41 < chi2 < 43.82, chi2
    assert idx.min() == 0 and idx.max() == n - 1
    # independent draws repeat within a window of n (probability 1 - 20!/20**20 per window)
    assert all(len(set(idx[k : k + n].tolist())) < n for k in range(0, 200, n))


def test_permutation_positions_uniform() -> None:
    """Over 4000 seeded epochs, each index lands in the first slot about equally often."""
    n, epochs = 8, 4000
    first = np.bincount([RandomSampler(seed=11).indices(n, epoch=e)[0] for e in range(epochs)], minlength=n)
    assert chi_square(first) < 24.32  # 0.999 quantile of chi-square with 7 dof


def test_permutation_ordered_pairs_uniform() -> None:
    """The first two slots: all 8 x 7 ordered pairs about equally often (two-sided, 55 dof).

    A uniform first slot alone does not make a uniform permutation (a random rotation of
    0..n-1 has one); the pair (first, second) does not repeat that way.  Quantiles 0.001 and
    0.999 of chi-square with 55 dof: 28.17 and 93.17.
    """
    n, epochs = 8, 5600
    sampler = RandomSampler(seed=13)
    pairs = np.zeros((n, n), np.int64)
    for e in range(epochs):
        a, b = np.asarray(sampler.indices(n, epoch=e))[:2]
        pairs[a, b] += 1
    assert np.trace(pairs) == 0  # a permutation never repeats an index
    off_diagonal = pairs[~np.eye(n, dtype=bool)]
    assert 28.17 < chi_square(off_diagonal) < 93.17


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"replacement": 1}, TypeError, "replacement must be a bool, got int: 1"),
        ({"num_samples": 0}, ValueError, "num_samples must be >= 1 or None, got 0"),
        ({"num_samples": 2.5}, TypeError, "num_samples must be an int or None, got float: 2.5"),
        ({"num_samples": True}, TypeError, "num_samples must be an int or None, got bool"),
        ({"seed": -1}, ValueError, "seed must be >= 0, got -1"),
        ({"seed": "x"}, TypeError, "seed must be an int or None, got str: 'x'"),
    ],
)
def test_bad_random_sampler(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RandomSampler(**kwargs)  # type: ignore[arg-type]


def test_check_sampler() -> None:
    assert isinstance(check_sampler(None, "s"), SequentialSampler)
    given = RandomSampler(seed=0)
    assert check_sampler(given, "s") is given

    class DuckTyped:  # any object with an indices method is accepted
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return list(range(n))

    duck = DuckTyped()
    assert check_sampler(duck, "s") is duck
    with pytest.raises(TypeError, match=r"reservoir_sampler must be None or a Sampler.*got list"):
        check_sampler([1, 2], "reservoir_sampler")
