"""WeightedSampler and BalancedSampler beyond the draws: what they say, refuse and leave out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.weighted import BalancedSampler, WeightedSampler


class Source:
    """What a sampler reads of a source (no cluster needed)."""

    def __init__(self, **columns: Sequence[object]) -> None:
        self._columns = columns
        self.uids: Sequence[Any] = [f"u{i}" for i in range(len(next(iter(columns.values()))))]

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def column_values(self, name: str) -> Sequence[object]:
        return self._columns[name]


def test_repr_names_the_column_or_counts_the_weights() -> None:
    assert (
        repr(WeightedSampler("w", seed=3))
        == "WeightedSampler('w', replacement=True, num_samples=None, seed=3)"
    )
    given = WeightedSampler([1.0, 2.0, 0.0], replacement=False, num_samples=4, seed=1)
    assert repr(given) == "WeightedSampler(<3 weights>, replacement=False, num_samples=4, seed=1)"
    assert (
        repr(BalancedSampler("label", num_samples=6, seed=2))
        == "BalancedSampler('label', num_samples=6, seed=2)"
    )


def test_never_drawn_is_empty_until_weights_of_that_many_rows_are_known() -> None:
    by_column = WeightedSampler("w")
    assert by_column.never_drawn(3).tolist() == []  # not bound yet: nothing known
    bound = by_column.bind(Source(w=[0.0, 2.0, 0.0]))
    assert bound.never_drawn(3).tolist() == [0, 2] and bound.never_drawn(3).dtype == np.int64
    assert bound.never_drawn(2).tolist() == []  # weights of another number of rows say nothing
    assert WeightedSampler([0.0, 1.0]).never_drawn(2).tolist() == [0]


def test_an_empty_epoch_draws_nothing() -> None:
    weighted = WeightedSampler([1.0, 2.0]).bind(Source(w=[0, 0]))
    drawn = weighted.indices(0, epoch=0, positions=np.array([], dtype=np.int64))
    assert drawn.tolist() == [] and drawn.dtype == np.int64
    balanced = BalancedSampler("c").bind(Source(c=["x", "y"]))
    assert balanced.indices(0, epoch=0, positions=np.array([], dtype=np.int64)).tolist() == []


def test_one_entry_of_weight_one_is_drawn() -> None:
    sampler = WeightedSampler([1.0], num_samples=3, seed=0).bind(Source(w=[0]))
    assert sampler.indices(1, epoch=0, positions=np.array([0])).tolist() == [0, 0, 0]


def test_without_replacement_each_drawable_row_comes_once_up_to_num_samples() -> None:
    weights = [1.0, 0.0, 3.0, 2.0, 0.0]
    sampler = WeightedSampler(weights, replacement=False, num_samples=10, seed=4).bind(Source(w=weights))
    for epoch in range(5):
        drawn = sampler.indices(5, epoch=epoch, positions=np.arange(5)).tolist()
        assert sorted(drawn) == [0, 2, 3]  # the rows of weight 0 never, the others once
    fewer = WeightedSampler(weights, replacement=False, num_samples=2, seed=4).bind(Source(w=weights))
    drawn = fewer.indices(5, epoch=0, positions=np.arange(5)).tolist()
    assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= {0, 2, 3}


def test_draws_follow_the_weights_at_the_given_positions() -> None:
    """Entries ordered are rows 3 and 0 of the source: their weights are 9 and 1."""
    sampler = WeightedSampler([1.0, 5.0, 5.0, 9.0], num_samples=20_000, seed=7).bind(Source(w=[0] * 4))
    drawn = sampler.indices(2, epoch=0, positions=np.array([3, 0]))
    share = float(np.mean(drawn == 0))  # entry 0 is source row 3: expected 0.9, sd ~0.002
    assert abs(share - 0.9) < 0.01


def test_a_subset_keeps_the_weights_of_its_rows() -> None:
    sampler = WeightedSampler([0.0, 4.0, 1.0]).subset([2, 0])
    assert repr(sampler).startswith("WeightedSampler(<2 weights>") and sampler.never_drawn(2).tolist() == [1]
    assert WeightedSampler("w").subset([0]).column == "w"


def test_bind_refuses_a_length_mismatch_and_bad_weights() -> None:
    with pytest.raises(ValueError, match=r"weights has 2 values but the source has 3 rows"):
        WeightedSampler([1.0, 2.0]).bind(Source(w=[0, 0, 0]))
    with pytest.raises(ValueError, match=r"weights must be one-dimensional, got shape \(1, 2\)"):
        WeightedSampler([[1.0, 2.0]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"weights must be numbers, got list"):
        WeightedSampler(["a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"replacement must be a bool, got int: 1"):
        WeightedSampler([1.0], replacement=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"column must be a non-empty str, got int: 3"):
        BalancedSampler(3)  # type: ignore[arg-type]


def test_bound_weights_are_read_only() -> None:
    sampler = WeightedSampler("w").bind(Source(w=[1.0, 2.0]))
    with pytest.raises(ValueError, match="read-only"):
        sampler._weights[0] = 5.0  # type: ignore[index]


def test_balanced_missing_classes_name_at_most_five_uids() -> None:
    with pytest.raises(ValueError, match=r"7 missing values .*\['u0', 'u1', 'u2', 'u3', 'u4'\]:"):
        BalancedSampler("c").bind(Source(c=[None] * 7 + ["x"]))


def test_balanced_shares_follow_the_classes_at_the_given_positions() -> None:
    sampler = BalancedSampler("c", num_samples=40, seed=1).bind(Source(c=["x", "x", "x", "y", "z"]))
    order = sampler.indices(2, epoch=0, positions=np.array([4, 0]))  # classes z and x
    assert sorted(np.bincount(order, minlength=2).tolist()) == [20, 20]
