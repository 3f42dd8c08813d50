"""Samplers: reproducibility and seeded statistics (pure, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_reservoir import RandomSampler, SequentialSampler
from dask_reservoir.samplers import check_sampler


def test_sequential() -> None:
    assert list(SequentialSampler().indices(5, epoch=3)) == [0, 1, 2, 3, 4]
    assert list(SequentialSampler().indices(0, epoch=0)) == []


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


def test_uniform_with_replacement_chi_square() -> None:
    """200 000 draws over 20 bins: chi-square below the 0.999 quantile (43.8 for 19 dof)."""
    n, draws = 20, 200_000
    idx = np.asarray(RandomSampler(replacement=True, num_samples=draws, seed=7).indices(n, epoch=0))
    counts = np.bincount(idx, minlength=n)
    expected = draws / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8, chi2
    assert idx.min() == 0 and idx.max() == n - 1


def test_permutation_positions_uniform() -> None:
    """Over 4000 seeded epochs, each index lands in the first slot about equally often."""
    n, epochs = 8, 4000
    first = np.bincount([RandomSampler(seed=11).indices(n, epoch=e)[0] for e in range(epochs)], minlength=n)
    expected = epochs / n
    chi2 = float(((first - expected) ** 2 / expected).sum())
    assert chi2 < 24.3, chi2  # 0.999 quantile of chi-square with 7 dof


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"replacement": 1}, TypeError, "replacement"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, TypeError, "num_samples"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "x"}, TypeError, "seed"),
    ],
)
def test_bad_random_sampler(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RandomSampler(**kwargs)  # type: ignore[arg-type]


def test_check_sampler() -> None:
    assert isinstance(check_sampler(None, "s"), SequentialSampler)
    with pytest.raises(TypeError, match=r"reservoir_sampler must be None or a Sampler.*got list"):
        check_sampler([1, 2], "reservoir_sampler")
