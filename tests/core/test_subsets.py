"""Which rows subsample / subsample_uids take: pure, on pandas sources (no cluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_reservoir._core.subsets import positions_by_values, random_positions
from dask_reservoir._source.make import make_source


def test_random_positions_are_distinct_sorted_and_seeded() -> None:
    drawn = random_positions(50, 10, seed=7)
    assert len(set(drawn)) == 10 and drawn == sorted(drawn) and all(0 <= p < 50 for p in drawn)
    assert drawn == random_positions(50, 10, seed=7)
    assert drawn != random_positions(50, 10, seed=8)
    assert random_positions(5, 5, seed=0) == [0, 1, 2, 3, 4]
    assert random_positions(5, 1, seed=0) in ([0], [1], [2], [3], [4])
    assert random_positions(5, np.int64(2), seed=1) == random_positions(5, 2, seed=1)


def test_random_positions_cover_rows_evenly() -> None:
    counts = np.zeros(10, int)
    for seed in range(2000):
        for p in random_positions(10, 3, seed=seed):
            counts[p] += 1
    expected = 2000 * 3 / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert 1.73 < chi2 < 27.88  # two-sided 0.001 quantiles of chi-square with 9 dof


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (0, ValueError, "nb_samples must be between 1 and the 5 source rows, got 0"),
        (6, ValueError, "nb_samples must be between 1 and the 5 source rows, got 6"),
        (2.0, TypeError, "nb_samples must be an int, got float: 2.0"),
        (True, TypeError, "nb_samples must be an int, got bool: True"),
    ],
)
def test_random_positions_bad_counts(n: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        random_positions(5, n, seed=0)


SOURCE = make_source(pd.DataFrame({"case": ["c0", "c1", "c2", "c3"], "site": ["A", "B", "A", "C"]}), "case")


def test_by_uid_keeps_the_order_asked_and_drops_repeats() -> None:
    assert positions_by_values(SOURCE, ["c3", "c0", "c3"], "case", uid_column="case") == [3, 0]
    assert positions_by_values(SOURCE, "c2", "case", uid_column="case") == [2]  # one str is one UID


def test_by_column_value_takes_every_matching_row() -> None:
    assert positions_by_values(SOURCE, ["C", "A"], "site", uid_column="case") == [3, 0, 2]


def test_missing_values_and_bad_columns() -> None:
    with pytest.raises(KeyError, match=r"UIDs not in the source column 'case': \['x', 'y'\]"):
        positions_by_values(SOURCE, ["c1", "x", "y"], "case", uid_column="case")
    with pytest.raises(KeyError, match=r"values not in the source column 'site': \['Z'\]"):
        positions_by_values(SOURCE, ["A", "Z"], "site", uid_column="case")
    with pytest.raises(ValueError, match=r"uids_name must be a column of the source, got 'nope'"):
        positions_by_values(SOURCE, ["A"], "nope", uid_column="case")
    with pytest.raises(ValueError, match="uids must hold at least one UID, got an empty collection"):
        positions_by_values(SOURCE, [], "case", uid_column="case")


def test_many_missing_values_are_summarised() -> None:
    source = make_source(pd.DataFrame({"v": range(3)}), "uid")
    with pytest.raises(KeyError, match=r"\[10, 11, 12, 13, 14\] and 2 more"):
        positions_by_values(source, list(range(10, 17)), "uid", uid_column="uid")


def test_exactly_five_missing_values_are_listed_without_a_tail() -> None:
    source = make_source(pd.DataFrame({"v": range(3)}), "uid")
    with pytest.raises(KeyError) as info:
        positions_by_values(source, list(range(10, 15)), "uid", uid_column="uid")
    assert info.value.args[0] == "UIDs not in the source column 'uid': [10, 11, 12, 13, 14]"
    with pytest.raises(KeyError) as info:
        positions_by_values(source, list(range(10, 16)), "uid", uid_column="uid")
    assert info.value.args[0] == "UIDs not in the source column 'uid': [10, 11, 12, 13, 14] and 1 more"


def test_unhashable_cells_are_skipped_not_the_end_of_the_search() -> None:
    source = make_source(pd.DataFrame({"tags": [["x"], "a", ["y"], "a"]}), "uid")
    assert positions_by_values(source, ["a"], "tags", uid_column="uid") == [1, 3]


def test_empty_uids_message_is_exact() -> None:
    with pytest.raises(ValueError, match=r"^uids must hold at least one UID, got an empty collection$"):
        positions_by_values(SOURCE, [], "case", uid_column="case")
