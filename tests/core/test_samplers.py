"""Samplers: reproducibility and seeded statistics (pure, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_reservoir import RandomSampler, SequentialSampler
from dask_reservoir._core.samplers import check_sampler
from dask_reservoir._core.weighted import BalancedSampler, WeightedSampler


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


class FakeSource:
    """What a sampler reads of a source: length, columns, values and UIDs (no cluster needed)."""

    def __init__(self, **columns: list[object]) -> None:
        self._columns = columns
        self.uids = [f"u{i}" for i in range(len(next(iter(columns.values()))))]

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def column_values(self, name: str) -> list[object]:
        return self._columns[name]


def test_weighted_draws_follow_the_weights_chi_square() -> None:
    """200 000 draws over 4 members of weights 1:2:3:4, chi-square with 3 dof at 0.001 per side.

    The 0.001 and 0.999 quantiles of chi-square(3) are 0.0243 and 16.27.
    """
    weights = [1.0, 2.0, 3.0, 4.0, 100.0]  # the last row is not a member: never drawn
    sampler = WeightedSampler(weights, num_samples=200_000, seed=11).bind(FakeSource(w=weights))
    idx = sampler.indices(4, epoch=0, positions=np.array([0, 1, 2, 3]))
    counts = np.bincount(idx, minlength=4)
    expected = 200_000 * np.array([1, 2, 3, 4]) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert 0.0243 < chi2 < 16.27, chi2
    # members are ordered by their source positions: a member at position 4 weighs 100
    skewed = sampler.indices(2, epoch=0, positions=np.array([0, 4]))
    assert np.bincount(skewed, minlength=2)[1] > 0.98 * 200_000


def test_weighted_from_a_source_column_reproducible_and_epochs_differ() -> None:
    source = FakeSource(w=[0.0, 1.0, 1.0, 0.0, 2.0])
    a = WeightedSampler("w", seed=3).bind(source)
    b = WeightedSampler("w", seed=3).bind(source)
    positions = np.arange(5)
    assert (
        a.indices(5, epoch=2, positions=positions).tolist()
        == b.indices(5, epoch=2, positions=positions).tolist()
    )
    assert (
        a.indices(50, epoch=0, positions=np.arange(5).repeat(10)).tolist()
        != a.indices(50, epoch=1, positions=np.arange(5).repeat(10)).tolist()
    )
    drawn = a.indices(5, epoch=0, positions=positions)
    assert not set(drawn.tolist()) & {0, 3}  # weight 0: never drawn
    without = (
        WeightedSampler("w", replacement=False, seed=3).bind(source).indices(5, epoch=0, positions=positions)
    )
    assert sorted(without.tolist()) == [1, 2, 4]  # a weighted permutation of the non-zero ones


@pytest.mark.parametrize(
    ("weights", "source", "error", "message"),
    [
        ([1.0, 2.0], FakeSource(w=[1, 2, 3]), ValueError, "weights has 2 values but the source has 3 rows"),
        ([1.0, -0.5, 2.0], None, ValueError, r"weights must be >= 0, got -0.5 at source position 1"),
        ([0.0, 0.0], None, ValueError, r"weights must not all be 0 \(2 weights of 0\)"),
        ([1.0, float("nan")], None, ValueError, "weights must be finite, got nan at source position 1"),
        (["a", "b"], None, TypeError, "weights must be numbers"),
        ("missing", FakeSource(w=[1, 2]), KeyError, r"weights='missing' is not a column of the source"),
        ("w", FakeSource(w=[1, -2]), ValueError, "weights must be >= 0, got -2.0 at source position 1"),
    ],
)
def test_bad_weights(
    weights: object, source: FakeSource | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        sampler = WeightedSampler(weights)  # type: ignore[arg-type]
        if source is not None:
            sampler.bind(source)


def test_an_epoch_of_zero_weight_members_is_an_error() -> None:
    sampler = WeightedSampler([0.0, 1.0]).bind(FakeSource(w=[0, 1]))
    with pytest.raises(ValueError, match=r"all 1 entries ordered by WeightedSampler.* have weight 0"):
        sampler.indices(1, epoch=0, positions=np.array([0]))
    with pytest.raises(ValueError, match="bind"):
        WeightedSampler("w").indices(2, epoch=0)


def test_weights_follow_a_subset_of_the_source() -> None:
    sampler = WeightedSampler([5.0, 0.0, 1.0, 0.0]).subset([2, 1, 0])
    bound = sampler.bind(FakeSource(w=[0, 0, 0]))  # the subset's three rows
    drawn = bound.indices(3, epoch=0, positions=np.arange(3))
    assert 1 not in drawn.tolist() and set(drawn.tolist()) <= {0, 2}


def test_balanced_classes_equal_per_epoch_chi_square() -> None:
    """Classes of 60 / 30 / 10 members: each epoch serves each class a third of the time.

    Within a class, members come in repeated random permutations: each of the 10 members of
    the small class is served 3 times an epoch, and the 3 or 4 draws left over go to random
    members.  Over 100 epochs those extras should be uniform over the 10 members:
    chi-square(9) quantiles 0.001 / 0.999 are 1.15 and 27.88.
    """
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    sampler = BalancedSampler("label", seed=5).bind(FakeSource(label=labels))
    positions = np.arange(100)
    extras = np.zeros(10)
    for epoch in range(100):
        order = sampler.indices(100, epoch=epoch, positions=positions)
        classes = np.array(labels)[order]
        counts = sorted((classes == c).sum() for c in "abc")
        assert counts == [33, 33, 34]  # equal shares, the remainder to one class
        small = np.bincount(order[order >= 90] - 90, minlength=10)
        assert set(small.tolist()) <= {3, 4}
        extras += small - 3
    expected = extras.sum() / 10
    chi2 = float(((extras - expected) ** 2 / expected).sum())
    assert 1.15 < chi2 < 27.88, chi2
    again = BalancedSampler("label", seed=5).bind(FakeSource(label=labels))
    assert (
        again.indices(100, epoch=3, positions=positions).tolist()
        == sampler.indices(100, epoch=3, positions=positions).tolist()
    )


def test_balanced_counts_only_the_classes_among_the_members() -> None:
    sampler = BalancedSampler("label", num_samples=8, seed=0).bind(FakeSource(label=[0, 0, 1, 1, 2]))
    order = sampler.indices(3, epoch=0, positions=np.array([0, 1, 2]))  # class 2 is not a member
    assert np.bincount(np.array([0, 0, 1])[order]).tolist() == [4, 4]


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_balanced_refuses_missing_classes_naming_uids(missing: object) -> None:
    with pytest.raises(ValueError, match=r"balance column 'label' has 1 missing values .*at UIDs \['u1'\]"):
        BalancedSampler("label").bind(FakeSource(label=["x", missing, "y"]))
    with pytest.raises(KeyError, match="column='nope' is not a column"):
        BalancedSampler("nope").bind(FakeSource(label=["x"]))
    with pytest.raises(TypeError, match="column must be a non-empty str"):
        BalancedSampler("")


def test_weights_near_the_float_maximum_draw_like_equal_weights() -> None:
    """Weights of 1e308 summed to inf: numpy's "probabilities do not sum to 1" at every epoch."""
    huge = [1e308, 1e308, 1e308, 0.0]
    for replacement in (True, False):
        sampler = WeightedSampler(huge, replacement=replacement, num_samples=3, seed=0)
        drawn = sampler.bind(FakeSource(w=huge)).indices(4, epoch=0, positions=np.arange(4))
        assert len(drawn) == 3 and set(drawn.tolist()) <= {0, 1, 2}
    mixed = WeightedSampler([1e308, 1e-300], num_samples=1000, seed=0).bind(FakeSource(w=[0, 0]))
    assert mixed.indices(2, epoch=0, positions=np.arange(2)).tolist() == [0] * 1000


def test_a_weight_too_small_beside_the_largest_is_never_drawn_and_said_so() -> None:
    """1e-300 beside 1e308 is a probability of 0: it was drawn never, yet not counted as never drawn."""
    weights = [1e308, 1e-300, 0.0, 2.0]
    sampler = WeightedSampler(weights, replacement=False, seed=0).bind(FakeSource(w=weights))
    assert sampler.never_drawn(4).tolist() == [1, 2]  # 2.0 / 1e308 is tiny, not 0: drawn, last
    for epoch in range(5):  # without replacement: only the rows that can be drawn, once each
        assert sampler.indices(4, epoch=epoch, positions=np.arange(4)).tolist() == [0, 3]
    plain = WeightedSampler([1.0, 0.5, 0.0], seed=0).bind(FakeSource(w=[0, 0, 0]))
    assert plain.never_drawn(3).tolist() == [2]


def test_balanced_with_fewer_draws_than_classes() -> None:
    """num_samples=10 over 20 classes failed with numpy's "need at least one array to concatenate"."""
    sampler = BalancedSampler("label", num_samples=10, seed=0).bind(FakeSource(label=list(range(20))))
    picked = []
    for epoch in range(3):
        order = sampler.indices(20, epoch=epoch, positions=np.arange(20))
        assert len(order) == 10 and len(set(order.tolist())) == 10  # one draw from each of 10 classes
        picked.append(sorted(order.tolist()))
    assert picked[0] != picked[1] or picked[1] != picked[2]  # other classes in other epochs
