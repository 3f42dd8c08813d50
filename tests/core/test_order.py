"""epoch_order and pass_order: a sampler's indices checked, and a rank's share of a pass (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.order import epoch_order, pass_order
from dask_reservoir._core.samplers import SequentialSampler


class Fixed:
    """A sampler giving what it was built with, whatever ``n`` and ``epoch``."""

    def __init__(self, indices: Any) -> None:
        self._indices = indices

    def indices(self, n: int, *, epoch: int) -> Iterable[int]:
        return self._indices

    def __repr__(self) -> str:
        return "Fixed()"


def fixed(indices: Any) -> Any:
    """A :class:`Fixed` sampler (typed loosely: it is not a ``Sampler`` subclass)."""
    return Fixed(indices)


class ByPosition:
    """A sampler reading the source positions: it serves the entries by descending position."""

    uses_positions = True

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[int]]] = []

    def indices(self, n: int, *, epoch: int, positions: np.ndarray | None = None) -> list[int]:
        assert positions is not None
        self.calls.append((n, epoch, positions.tolist()))
        return np.argsort(-positions, kind="stable").tolist()


def test_a_sampler_reading_positions_gets_them() -> None:
    sampler = ByPosition()
    out = epoch_order(sampler, 3, 4, positions=np.array([10, 30, 20]))  # type: ignore[arg-type]
    assert out.tolist() == [1, 2, 0]
    assert sampler.calls == [(3, 4, [10, 30, 20])]


def test_a_plain_sampler_is_not_given_positions() -> None:
    # Fixed.indices takes no positions: passing them would raise TypeError
    assert epoch_order(fixed([2, 0]), 3, 0, positions=np.array([5, 6, 7])).tolist() == [2, 0]


def test_ranges_become_int64_arrays() -> None:
    out = epoch_order(fixed(range(0, 6, 2)), 6, 0)
    assert out.dtype == np.int64 and out.tolist() == [0, 2, 4]
    assert epoch_order(fixed(range(4, 0, -1)), 5, 0).tolist() == [4, 3, 2, 1]
    empty = epoch_order(fixed(range(0)), 3, 0)
    assert empty.dtype == np.int64 and empty.size == 0
    assert epoch_order(fixed(range(2, 3)), 3, 0).tolist() == [2]


@pytest.mark.parametrize(
    "raw", [range(5, 6), range(-1, 2), range(0, 4), range(3, 0, -1), range(2, -2, -1), [0, 3], np.array([-1])]
)
def test_indices_out_of_range_are_refused(raw: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^reservoir_sampler Fixed\(\) must yield indices in range\(3\) \(3 entries"
    ):
        epoch_order(fixed(raw), 3, 0)


def test_the_error_names_the_caller_and_shows_five_bad_indices() -> None:
    with pytest.raises(
        ValueError,
        match=r"^source_sampler Fixed\(\) must yield indices in range\(2\) \(2 source rows\), got \[5, 6, 7, 8, 9\]$",
    ):
        epoch_order(fixed([0, 5, 6, 7, 8, 9, 10]), 2, 0, name="source_sampler", of="source rows")


def test_non_int_indices_are_refused() -> None:
    with pytest.raises(
        TypeError, match=r"^reservoir_sampler Fixed\(\) must yield int indices, got float64 values$"
    ):
        epoch_order(fixed([0.0, 1.0]), 3, 0)
    assert epoch_order(fixed([]), 3, 0).size == 0  # no index: no dtype to check


def test_arrays_are_flattened_to_int64() -> None:
    out = epoch_order(fixed(np.array([[1, 0], [2, 1]], dtype=np.int32)), 3, 0)
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 2, 1]


def test_pass_order_shards_partition_each_pass() -> None:
    for pass_number in range(3):
        shards = [pass_order(SequentialSampler(), 11, pass_number, rank, 3) for rank in range(3)]
        together = np.concatenate(shards)
        assert sorted(together.tolist()) == list(range(11))
        assert all(s.dtype == np.int64 for s in shards)
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    whole = pass_order(SequentialSampler(), 5, 0)
    assert whole.dtype == np.int64 and whole.tolist() == [0, 1, 2, 3, 4]


def test_pass_order_errors_name_the_source_sampler() -> None:
    with pytest.raises(
        ValueError, match=r"^source_sampler Fixed\(\) must yield indices in range\(2\) \(2 source rows\)"
    ):
        pass_order(fixed([3]), 2, 0)
