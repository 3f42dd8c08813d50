"""Coverage: per source row, tried, loaded, or its last result empty, in arrays (pure, no cluster)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.ledger.coverage import Coverage


def at(*positions: int) -> np.ndarray:
    return np.array(positions, dtype=np.int64)


def test_a_new_coverage_is_empty() -> None:
    coverage = Coverage(5)
    assert (coverage.tried_count, coverage.loaded_count, coverage.unloadable()) == (0, 0, set())
    assert "rows=5 tried=0 loaded=0 empty=0" in repr(coverage)


def test_loaded_and_empty_decide_what_is_unloadable() -> None:
    coverage = Coverage(3)
    coverage.loaded(at(0), ["a"], at(0))
    assert coverage.unloadable() == {"a"} and coverage.loaded_count == 0
    coverage.loaded(at(0), ["a"], at(2))
    assert coverage.unloadable() == set() and coverage.loaded_count == 1
    coverage.loaded(at(0), ["a"], at(0))  # loaded once: an empty result later does not make it unloadable
    assert coverage.unloadable() == set() and coverage.loaded_count == 1


def test_a_job_marks_rows_with_and_without_rows() -> None:
    coverage = Coverage(4)
    coverage.loaded(at(0, 1, 2), ["a", "b", "c"], at(1, 0, 3))
    assert coverage.unloadable() == {"b"} and coverage.loaded_count == 2
    coverage.loaded(at(1), ["b"], at(2))
    assert coverage.unloadable() == set() and coverage.loaded_count == 3


def test_tried_and_skipped_count_rows_once() -> None:
    coverage = Coverage(4)
    coverage.tried(at(0, 1))
    coverage.tried(at(0))
    assert coverage.tried_count == 2 and coverage.loaded_count == 0
    coverage.skipped(at(2, 0))
    assert coverage.tried_count == 3 and coverage.loaded_count == 2 and coverage.unloadable() == set()
    coverage.tried(at())
    assert coverage.tried_count == 3


def test_a_row_the_store_rejected_no_longer_counts_as_loaded() -> None:
    coverage = Coverage(2)
    coverage.loaded(at(0, 1), ["a", "b"], at(1, 1))
    coverage.unloaded(0)
    coverage.unloaded(0)  # once
    assert coverage.loaded_count == 1
    empty = Coverage(2)
    empty.loaded(at(0), ["a"], at(0))
    empty.loaded(at(0), ["a"], at(1))
    empty.loaded(at(0), ["a"], at(0))  # loaded, then empty: not unloadable...
    empty.unloaded(0)  # ... until the store rejects what it loaded
    assert empty.unloadable() == {"a"}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tried", "loaded", "skipped", "unloaded"]),
            st.lists(st.integers(0, 7), unique=True, max_size=5),
            st.integers(0, 2),
        ),
        max_size=30,
    )
)
def test_coverage_matches_sets_of_uids(ops: list[tuple[str, list[int], int]]) -> None:
    """The arrays against the sets of UIDs they replace."""
    coverage = Coverage(8)
    tried: set[int] = set()
    loaded: set[int] = set()
    empty: set[int] = set()
    for op, positions, rows in ops:
        where = np.array(positions, dtype=np.int64)
        if op == "tried":
            coverage.tried(where)
            tried |= set(positions)
        elif op == "loaded":
            counts = np.array([(p + rows) % 3 for p in positions], dtype=np.int64)
            coverage.loaded(where, [f"u{p}" for p in positions], counts)
            for p, c in zip(positions, counts.tolist(), strict=True):
                if c:
                    loaded.add(p)
                    empty.discard(p)
                else:
                    empty.add(p)
        elif op == "skipped":
            coverage.skipped(where)
            tried |= set(positions)
            loaded |= set(positions)
        elif positions:
            coverage.unloaded(positions[0])
            loaded.discard(positions[0])
        assert coverage.tried_count == len(tried) and coverage.loaded_count == len(loaded)
        assert coverage.unloadable() == {f"u{p}" for p in empty - loaded}


def test_rows_at_last_end_only_their_own_empty_streak() -> None:
    coverage = Coverage(6)
    coverage.loaded(at(0, 1, 2), ["a", "b", "c"], at(0, 0, 0))
    assert coverage.unloadable() == {"a", "b", "c"}
    coverage.loaded(at(1, 3), ["b", "d"], at(2, 0))  # b loads rows; d is empty; a and c stay empty
    assert coverage.unloadable() == {"a", "c", "d"} and coverage.loaded_count == 1
    coverage.loaded(at(4), ["e"], at(1))  # a row with rows that was never empty ends nothing
    assert coverage.unloadable() == {"a", "c", "d"}
