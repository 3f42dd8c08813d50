"""The rules of iter(), without a cluster: how much to ingest, when waiting must end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_reservoir import ClusterLostError, JobError, RandomSampler, WeightedSampler
from dask_reservoir._core.ingest import (
    drawable_rows,
    minimum_error,
    required_entries,
    single_take,
    take_limit,
    unreachable,
)
from dask_reservoir._core.options import validate_options
from dask_reservoir._core.records import FailureRecord


@pytest.mark.parametrize(
    ("size", "required", "room", "capped", "cap", "counted", "expected"),
    [
        (0, 4, 100, True, 1, 0, 4),  # below the minimum: what is missing, cap or not
        (3, 4, 100, True, 1, 0, 1),
        (3, 4, 0, False, None, 0, 0),  # no room at all
        (2, 4, 1, False, None, 0, 1),  # below the minimum, but only one slot free
        (4, 4, 9, False, None, 0, 9),  # uncapped: everything, within room
        (4, 4, 9, True, None, 0, 9),  # no cap given
        (4, 4, 9, True, 5, 0, 5),
        (4, 4, 9, True, 5, 3, 2),
        (4, 4, 9, True, 5, 5, 0),  # the cap is spent
        (4, 4, 9, True, 5, 7, 0),
        (4, 4, 3, True, 5, 0, 3),  # the cap is larger than the room
        (6, 4, 9, True, 2, 1, 1),
    ],
)
def test_take_limit(
    size: int, required: int, room: int, capped: bool, cap: int | None, counted: int, expected: int
) -> None:
    assert (
        take_limit(size=size, required=required, room=room, capped=capped, cap=cap, counted=counted)
        == expected
    )


@given(
    size=st.integers(0, 20),
    required=st.integers(1, 20),
    room=st.integers(0, 30),
    capped=st.booleans(),
    cap=st.none() | st.integers(1, 10),
    counted=st.integers(0, 12),
)
def test_take_limit_never_exceeds_room_nor_the_cap(
    size: int, required: int, room: int, capped: bool, cap: int | None, counted: int
) -> None:
    limit = take_limit(size=size, required=required, room=room, capped=capped, cap=cap, counted=counted)
    assert 0 <= limit <= room
    if size >= required and capped and cap is not None:
        assert limit <= max(0, cap - counted)
    if size < required:
        assert limit == min(required - size, room)


def test_single_take() -> None:
    assert single_take(size=4, required=4, capped=False, cap=2)
    assert single_take(size=4, required=4, capped=True, cap=None)
    assert not single_take(size=4, required=4, capped=True, cap=2)  # counted against the cap
    assert not single_take(size=3, required=4, capped=False, cap=None)  # the minimum is not reached


def test_unreachable_counts_only_uids_that_cannot_load() -> None:
    assert not unreachable(required=3, n_source=3, unloadable=set(), in_store=0)
    assert unreachable(required=3, n_source=3, unloadable={"a"}, in_store=0)
    assert not unreachable(required=3, n_source=3, unloadable={"a"}, in_store=1)
    assert not unreachable(required=2, n_source=4, unloadable={"a", "b"}, in_store=0)
    assert unreachable(required=3, n_source=4, unloadable={"a", "b"}, in_store=0)


def test_minimum_error() -> None:
    failures = tuple(FailureRecord(u, "OSError", f"gone {u}") for u in range(7))
    keep = minimum_error(
        size=1,
        required=3,
        n_source=10,
        unloadable=set(range(7)),
        in_store=0,
        failures=failures,
        status="running",
        address="tcp://x",
    )
    assert keep is None  # 3 rows can still load
    error = minimum_error(
        size=1,
        required=4,
        n_source=10,
        unloadable=set(range(7)),
        in_store=0,
        failures=failures,
        quarantined=set(range(5)),
        status="running",
        address="tcp://x",
    )
    assert isinstance(error, JobError)
    assert str(error).startswith(
        "only 3 of the 10 source rows can still give an entry "
        "(5 quarantined, 2 whose last result had no rows: [5, 6]), fewer than the minimum 4"
    )
    assert "UID 4: OSError: gone 4" in str(error) and "UID 5" not in str(error)  # the first 5 are quoted
    lost = minimum_error(
        size=2,
        required=4,
        n_source=10,
        unloadable=set(),
        in_store=0,
        failures=(),
        status="lost",
        address="tcp://x",
    )
    assert isinstance(lost, ClusterLostError) and "'tcp://x' with 2 entries loaded" in str(lost)
    assert (
        minimum_error(
            size=2,
            required=4,
            n_source=10,
            unloadable=set(),
            in_store=0,
            failures=(),
            status="connecting",
            address="",
        )
        is None
    )


def test_minimum_error_counts_loaded_unloadable_uids_and_lists_the_empty_ones() -> None:
    failures = (FailureRecord("a", "OSError", "gone a"), FailureRecord("b", "OSError", "gone b"))
    error = minimum_error(
        size=2,
        required=6,
        n_source=8,
        unloadable={"a", "b", 1, 2, 3, 4, 5, 6},
        in_store=2,  # two of them still have an entry
        failures=failures,
        quarantined={"a", "b"},
        status="running",
        address="",
    )
    assert str(error) == (
        "only 2 of the 8 source rows can still give an entry (2 quarantined, 6 whose last result had "
        "no rows: [1, 2, 3, 4, 5] ...), fewer than the minimum 6 (min_reservoir_samples); "
        "failures: UID 'a': OSError: gone a; UID 'b': OSError: gone b"
    )
    five = minimum_error(
        size=0,
        required=4,
        n_source=5,
        unloadable={1, 2, 3, 4, 5},
        in_store=0,
        failures=(),
        status="running",
        address="",
    )
    assert str(five).startswith("only 0 of the 5 source rows") and "[1, 2, 3, 4, 5])" in str(five)


@pytest.mark.parametrize(
    ("options", "n_source", "expected"),
    [
        ({"max_reservoir_samples": 10, "min_reservoir_samples": 4}, 100, 4),
        ({"max_reservoir_samples": 10, "min_reservoir_samples": 4}, 3, 3),  # capped by the source
        # ranks: a whole rank's epoch, the per-epoch maximum within the capacity
        ({"max_reservoir_samples": 10, "min_reservoir_samples": 4, "world_size": 2}, 100, 4),
        (
            {
                "max_reservoir_samples": 10,
                "min_reservoir_samples": 4,
                "world_size": 2,
                "maximum_number_of_samples_per_epoch": 8,
            },
            100,
            8,
        ),
        (
            {
                "max_reservoir_samples": 6,
                "min_reservoir_samples": 4,
                "world_size": 2,
                "maximum_number_of_samples_per_epoch": 8,
            },
            100,
            6,
        ),
        # without ranks the per-epoch maximum does not raise the wait
        (
            {
                "max_reservoir_samples": 10,
                "min_reservoir_samples": 4,
                "maximum_number_of_samples_per_epoch": 8,
            },
            100,
            4,
        ),
    ],
)
def test_required_entries(options: dict[str, object], n_source: int, expected: int) -> None:
    assert required_entries(validate_options(**options), n_source) == expected


def test_a_sampler_drawing_every_row_needs_no_mask() -> None:
    assert drawable_rows(RandomSampler(seed=0), 5, required=5, minimum=5, refuse=True) == (None, 0)


def test_drawable_rows_masks_the_rows_of_zero_weight() -> None:
    drawable, never = drawable_rows(
        WeightedSampler([0.0, 2.0, 0.0, 1.0]), 4, required=2, minimum=2, refuse=True
    )
    assert drawable is not None and drawable.tolist() == [False, True, False, True] and never == 2


def test_too_few_drawable_rows_are_refused_naming_the_sampler_and_the_minimum() -> None:
    sampler = WeightedSampler([0.0, 1.0, 0.0])
    with pytest.raises(
        ValueError, match=r"can draw only 1 of the 3 source rows \(those of non-zero weight\)"
    ) as info:
        drawable_rows(sampler, 3, required=2, minimum=2, refuse=True)
    assert "min_reservoir_samples=2" in str(info.value)
    # a subset is not refused: its iter() raises instead
    drawable, never = drawable_rows(sampler, 3, required=2, minimum=2, refuse=False)
    assert drawable is not None and int(drawable.sum()) == 1 and never == 2
