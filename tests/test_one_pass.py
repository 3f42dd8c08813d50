"""``passes=`` and ``wait_loaded()``: load every row a given number of times, then stop (a process cluster)."""

from __future__ import annotations

import time
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from dask_reservoir.errors import IteratorExpiredError, JobError

pytestmark = pytest.mark.timeout(120)

N = 61  # odd: two ranks get shards of 31 and 30 rows


def square_unless_bad(row: dict[str, Any]) -> dict[str, Any]:
    uid = int(row["sample_uid"])
    if uid % 10 == 7:
        raise ValueError(f"row {uid} is bad")
    return {"x": np.full(3, uid, np.int64), "sq": uid * uid}


def always_fails(row: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("nothing loads")


def slow(row: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.5)
    return {"v": row["sample_uid"]}


def source(n: int = N) -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(100, 100 + n), "w": np.arange(n) * 0.5})


def check_rows(table: pd.DataFrame) -> None:
    """Every entry holds its own UID's values."""
    uids = table["sample_uid"].to_numpy()
    assert (np.stack(table["x"].to_list())[:, 0] == uids).all()
    assert (table["sq"].to_numpy() == uids * uids).all()


BAD = {u for u in range(100, 100 + N) if u % 10 == 7}


def test_one_pass_loads_each_row_once_then_stops(process_client: Client) -> None:
    with AsyncReservoir(source(), square_unless_bad, N, passes=1, client=process_client, batch_size=8) as r:
        stats = r.wait_loaded(timeout=60)
        assert stats.loading_done and stats.rows_submitted == N
        assert stats.rows_loaded == N - len(BAD) and stats.rows_failed == len(BAD)
        assert {f.uid for f in stats.failures} == BAD
        table = r.to_pandas()
        assert set(table["sample_uid"]) == set(range(100, 100 + N)) - BAD
        check_rows(table)
        served: list[int] = []
        for _ in range(3):  # epochs go on over what is loaded; nothing more is submitted
            for batch in r:
                assert (batch["x"][:, 0] == batch["sample_uid"]).all()
                served += batch["sample_uid"].tolist()
        assert sorted(served) == sorted(3 * list(set(table["sample_uid"])))
        after = r.stats()
        assert after.rows_submitted == N and after.jobs_in_flight == 0 and after.loading_done


def test_two_passes_load_each_row_twice(process_client: Client) -> None:
    frame = source(20)
    with AsyncReservoir(frame, lambda row: {"v": row["w"]}, 20, passes=2, client=process_client) as r:
        stats = r.wait_loaded(timeout="60s")
        assert stats.rows_submitted == 40 and stats.rows_loaded == 40 and stats.source_passes == 2
        table = r.to_pandas()
        assert sorted(table["sample_uid"]) == list(frame["sample_uid"])
        assert (table["v"].to_numpy() == (table["sample_uid"].to_numpy() - 100) * 0.5).all()


def test_ranks_load_each_row_exactly_once_across_ranks(process_client: Client) -> None:
    frame = pd.DataFrame({"sample_uid": np.arange(100, 100 + N)})
    shards = []
    for rank in (0, 1):
        with AsyncReservoir(
            frame, lambda row: {"x": np.full(3, row["sample_uid"]), "sq": row["sample_uid"] ** 2}, N,
            passes=1, rank=rank, world_size=2, client=process_client,
        ) as r:  # fmt: skip
            stats = r.wait_loaded(timeout=60)
            table = r.to_pandas()
            check_rows(table)
            assert stats.rows_submitted == len(table)
            shards.append(set(table["sample_uid"]))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(frame["sample_uid"])
    assert sorted(map(len, shards)) == [30, 31]  # uneven shards: no padding, no repeat


def test_a_dask_source_one_pass(process_client: Client) -> None:
    frame = dd.from_pandas(source(), npartitions=3)
    with AsyncReservoir(frame, square_unless_bad, N, passes=1, client=process_client, rows_per_job=4) as r:
        stats = r.wait_loaded(timeout=60)
        assert stats.rows_submitted == N and stats.rows_failed == len(BAD)
        check_rows(r.to_pandas())


def test_iter_serves_what_one_pass_loaded_below_the_minimum(process_client: Client) -> None:
    # the minimum can never be reached (failures): iter() serves what is there once loading ended
    with AsyncReservoir(
        source(), square_unless_bad, N, min_reservoir_samples=N, passes=1, client=process_client, timeout=60
    ) as r:
        uids = [u for batch in r for u in batch["sample_uid"].tolist()]
        assert sorted(uids) == sorted(set(range(100, 100 + N)) - BAD)


def test_iter_raises_when_one_pass_loaded_nothing(process_client: Client) -> None:
    with AsyncReservoir(source(5), always_fails, 5, passes=1, client=process_client, timeout=60) as r:
        with pytest.raises(
            JobError, match=r"passes=1 ended with no entry to serve \(0 rows loaded, 5 failed\)"
        ):
            iter(r)


def test_wait_loaded_needs_passes_and_checks_its_arguments(client: Client) -> None:
    with AsyncReservoir(source(4), lambda row: {"v": 1}, 4, client=client) as r:
        with pytest.raises(ValueError, match="wait_loaded\\(\\) needs passes="):
            r.wait_loaded(timeout=1)
    with AsyncReservoir(source(4), lambda row: {"v": 1}, 4, client=client, passes=1) as r:
        with pytest.raises(TypeError, match="progress must be a bool or None, got str"):
            r.wait_loaded(progress="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be >= 0 seconds"):
            r.wait_loaded(timeout=-1)
    with pytest.raises(ValueError, match="passes must be >= 1 or None, got 0"):
        AsyncReservoir(source(4), lambda row: {"v": 1}, 4, client=client, passes=0)


def test_wait_loaded_times_out_and_keeps_what_loaded(client: Client) -> None:
    with AsyncReservoir(source(40), slow, 40, client=client, passes=1) as r:
        with pytest.raises(TimeoutError, match=r"waited 0.2 s \(timeout\) for passes=1 to end"):
            r.wait_loaded(timeout=0.2)
        assert not r.stats().loading_done


@pytest.mark.parametrize("hold", [False, True])
def test_wait_loaded_is_not_blocked_by_an_epoch_prepared_ahead_or_a_held_iterator(
    client: Client, hold: bool
) -> None:
    source = pd.DataFrame({"sample_uid": np.arange(20)})
    with AsyncReservoir(
        source, lambda row: {"x": float(row["sample_uid"])}, 4, min_reservoir_samples=2, client=client,
        passes=1, prefetch_batches=2, batch_size=2, max_reservoir_replacement_size=1,
    ) as r:  # fmt: skip
        for _ in range(2):  # the last batch of an epoch prepares the next one: its snapshot pins entries
            for batch in r:
                assert (batch["x"] == batch["sample_uid"]).all()
        held = iter(r) if hold else None
        stats = r.wait_loaded(timeout=60)  # results wait for the room those entries hold
        assert stats.loading_done and stats.rows_loaded == 20 and stats.entries_waiting == 0
        if held is not None:
            with pytest.raises(
                IteratorExpiredError, match=r"wait_loaded\(\) needed the room its entries pinned"
            ):
                next(held)
