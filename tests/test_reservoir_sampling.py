"""Weighted and balanced sampling through a reservoir, on real clusters (pandas and dask sources)."""

from __future__ import annotations

from typing import Any

import dask.dataframe as dd
import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, BalancedSampler, JobError, WeightedSampler
from tests.utils import frame, iterate_until, load_value, poll_for


def test_balanced_reservoir_sampler_serves_classes_equally(client: Client) -> None:
    source = frame(40, label=["rare"] * 4 + ["common"] * 36)
    with AsyncReservoir(
        source,
        load_value,
        40,
        min_reservoir_samples=40,
        client=client,
        batch_size=10,
        reservoir_sampler=BalancedSampler("label", seed=1),
    ) as r:
        for _ in range(3):
            uids = np.concatenate([b["sample_uid"] for b in r])
            assert len(uids) == 40
            rare = int((uids < 4).sum())
            assert rare == 20  # 4 of 40 rows, but half of every epoch
            assert set(uids[uids < 4].tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("dask_source", [False, True])
def test_weighted_source_sampler_loads_what_weighs(process_client: Client, dask_source: bool) -> None:
    pdf = frame(12, w=[0.0] * 6 + [1.0] * 6)
    source = dd.from_pandas(pdf, npartitions=3) if dask_source else pdf
    with AsyncReservoir(
        source,
        load_value,
        12,
        min_reservoir_samples=6,
        client=process_client,
        batch_size=4,
        source_sampler=WeightedSampler("w", replacement=False, seed=2),
        reservoir_sampler=WeightedSampler("w", seed=3),
    ) as r:
        iterate_until(r, lambda: r.stats().rows_loaded >= 30)
        loaded = {int(u) for b in r for u in b["sample_uid"]}
        assert loaded <= set(range(6, 12))  # rows of weight 0 are never submitted
        s = r.stats()
        assert s.reservoir_size == 6 and s.rows_loaded >= 30  # only the 6 weighted rows ever load


def test_subsample_keeps_weights_given_as_values(client: Client) -> None:
    weights = np.zeros(20)
    weights[[3, 7]] = 1.0
    with AsyncReservoir(
        frame(20),
        load_value,
        20,
        min_reservoir_samples=20,
        client=client,
        batch_size=20,
        reservoir_sampler=WeightedSampler(weights, seed=0),
    ) as r:
        list(r)
        with r.subsample_uids([7, 3, 5]) as child:  # child positions 0, 1, 2 are parent rows 7, 3, 5
            poll_for(lambda: child.reservoir_size() == 3, what="the child's entries")
            served = {int(u) for b in child for u in b["sample_uid"]}
            assert served <= {3, 7} and served


def test_bad_weights_fail_at_construction_naming_them(client: Client) -> None:
    with pytest.raises(ValueError, match="weights has 3 values but the source has 5 rows"):
        AsyncReservoir(frame(5), load_value, 5, client=client, reservoir_sampler=WeightedSampler([1, 2, 3]))
    with pytest.raises(ValueError, match=r"balance column 'label' has 1 missing values .*at UIDs \[2\]"):
        AsyncReservoir(
            frame(4, label=["a", "b", None, "a"]),
            load_value,
            4,
            client=client,
            reservoir_sampler=BalancedSampler("label"),
        )


def test_a_minimum_the_weighted_source_sampler_cannot_reach_is_refused_at_construction(
    client: Client,
) -> None:
    """Issue 16, point 6: 5 rows of non-zero weight can never give 8 entries."""
    source = frame(20, w=[1.0] * 5 + [0.0] * 15)
    with pytest.raises(
        ValueError,
        match=r"source_sampler=WeightedSampler\('w'.* can draw only 5 of the 20 source rows \(those of non-zero "
        r"weight in column 'w'\), fewer than the minimum 8 .*min_reservoir_samples=8",
    ):
        AsyncReservoir(
            source,
            load_value,
            10,
            min_reservoir_samples=8,
            client=client,
            source_sampler=WeightedSampler("w"),
        )
    with AsyncReservoir(
        source, load_value, 10, min_reservoir_samples=5, client=client, source_sampler=WeightedSampler("w")
    ) as r:
        assert len(next(iter(r))["label"]) == 1  # 5 rows are enough for a minimum of 5


def test_an_unreachable_minimum_is_refused_before_the_loader_is_chosen(client: Client) -> None:
    """The sampler's refusal comes first, as before issue 17: loader='process' is refused on a threaded cluster."""
    source = frame(10, w=[1.0] * 2 + [0.0] * 8)
    with pytest.raises(ValueError, match=r"can draw only 2 of the 10 source rows"):
        AsyncReservoir(
            source,
            load_value,
            10,
            min_reservoir_samples=5,
            client=client,
            source_sampler=WeightedSampler("w"),
            loader="process",
        )
    with pytest.raises(ValueError, match=r"loader='process' cannot be used"):  # the loader's own refusal
        AsyncReservoir(source, load_value, 10, min_reservoir_samples=2, client=client, loader="process")


def test_weights_too_small_to_be_drawn_count_as_never_drawn(client: Client) -> None:
    """1e-300 beside 1e308 is never drawn: iter() reloaded the one other row forever."""
    with pytest.raises(ValueError, match=r"can draw only 1 of the 4 source rows"):
        AsyncReservoir(
            frame(4),
            load_value,
            4,
            min_reservoir_samples=2,
            client=client,
            source_sampler=WeightedSampler([1e308, 1e-300, 0.0, 0.0], seed=0),
        )


def test_a_subset_the_weighted_source_sampler_cannot_fill_is_made_and_its_iter_raises(client: Client) -> None:
    """subsample_uids() of rows mostly of weight 0 was refused: an analyst may only read it."""
    source = frame(12, w=[1.0] * 6 + [0.0] * 6)
    with AsyncReservoir(
        source, load_value, 12, min_reservoir_samples=4, client=client, source_sampler=WeightedSampler("w")
    ) as r:
        iterate_until(r, lambda: {0, 1} <= set(r.to_pandas()["sample_uid"].tolist()))
        with r.subsample_uids(
            [0, 1, 8, 9]
        ) as child:  # 2 of its 4 rows weigh 0: the minimum 4 is out of reach
            assert sorted(child.to_pandas()["sample_uid"].tolist()) == [0, 1]
            with pytest.raises(
                JobError, match=r"only 2 of the 4 source rows .* 2 that source_sampler=WeightedSampler"
            ):
                iter(child)


def test_a_subset_of_rows_of_weight_0_only_is_refused_naming_the_sampler(client: Client) -> None:
    with AsyncReservoir(
        frame(12, w=[1.0] * 6 + [0.0] * 6), load_value, 12, client=client, source_sampler=WeightedSampler("w")
    ) as r:
        with pytest.raises(
            ValueError,
            match=r"^source_sampler=WeightedSampler\('w'.*\) over the 2 rows of this subset: weights must not all be 0",
        ):
            r.subsample_uids([8, 9])


def failing_for_three(row: dict[str, Any]) -> dict[str, Any]:
    if int(row["value"]) < 3:
        raise RuntimeError(f"row {int(row['value'])} cannot load")
    return load_value(row)


def test_rows_never_drawn_count_against_the_minimum_at_iter(client: Client) -> None:
    """Issue 16, point 6: 10 rows can be drawn, 3 of them are quarantined: 7 cannot reach 8."""
    with AsyncReservoir(
        frame(20, w=[1.0] * 10 + [0.0] * 10),
        failing_for_three,
        10,
        min_reservoir_samples=8,
        client=client,
        source_sampler=WeightedSampler("w"),
        max_failures_per_uid=1,
        rows_per_job=1,
        timeout=60,  # only a safety net: JobError is expected as soon as the 3 rows are quarantined
    ) as r:
        with pytest.raises(
            JobError,
            match=r"only 7 of the 20 source rows can still give an entry \(3 quarantined, 0 whose last result "
            r"had no rows, 10 that source_sampler=WeightedSampler\('w'.* never draws\), fewer than the minimum 8",
        ):
            iter(r)
