"""``batched=True`` on real clusters: vectorized functions over chunks, tables back, Parquet sources."""

from __future__ import annotations

import time
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, JobError, SequentialSampler
from tests.utils import iterate_until

N = 60


def source(n: int = N) -> pd.DataFrame:
    return pd.DataFrame({"uid": [f"u{i:03d}" for i in range(n)], "v": np.arange(n), "extra": np.zeros(n)})


def features(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": df["uid"],
            "double": df["v"] * 2.0,
            "vec": list(np.stack([df["v"], -df["v"]], axis=1).astype(np.float32)),
            "chunk": np.full(len(df), len(df)),
        }
    )


def uneven(df: pd.DataFrame) -> pd.DataFrame:
    """Multiples of 3 give no row, multiples of 5 two rows, the others one."""
    v = df["v"].to_numpy()
    times = np.where(v % 3 == 0, 0, np.where(v % 5 == 0, 2, 1))
    out = df.loc[df.index.repeat(times), ["uid", "v"]].reset_index(drop=True)
    out["copy"] = out.groupby("uid").cumcount()
    return out


def typed(df: pd.DataFrame) -> pd.DataFrame:
    v = df["v"].to_numpy()
    return pd.DataFrame(
        {
            "uid": df["uid"].to_numpy(),
            "parity": pd.Categorical(np.where(v % 2 == 0, "even", "odd"), categories=["odd", "even"]),
            "label": pd.array([f"s{x}" if x % 4 else None for x in v], dtype="string"),
            "when": pd.to_datetime(v, unit="h").tz_localize("America/New_York"),
            "count": pd.array([int(x) if x % 7 else None for x in v], dtype="Int64"),
        }
    )


def collect(r: AsyncReservoir) -> dict[str, np.ndarray]:
    batches = list(r)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("cluster", ["threads", "processes"])
def test_every_uid_loads_once_with_its_own_values(
    cluster: str, client: Client, process_client: Client
) -> None:
    c = client if cluster == "threads" else process_client
    with AsyncReservoir(
        source(),
        features,
        N,
        min_reservoir_samples=N,
        uid_column="uid",
        client=c,
        batched=True,
        rows_per_job=16,
        batch_size=7,
    ) as r:
        got = collect(r)
        stats = r.stats()
    order = np.argsort(got["uid"])
    assert got["uid"][order].tolist() == source()["uid"].tolist()
    v = np.array([int(u[1:]) for u in got["uid"]])
    assert np.array_equal(got["double"], v * 2.0)
    assert got["vec"].shape == (N, 2) and got["vec"].dtype == np.float32
    assert np.array_equal(got["vec"][:, 1], -v.astype(np.float32))
    assert got["chunk"].max() == 16  # one call per chunk of rows_per_job rows
    assert stats.rows_loaded >= N and stats.rows_failed == 0
    assert stats.rows_loaded == 16 * stats.jobs_completed


def test_zero_or_several_rows_per_uid(client: Client) -> None:
    with AsyncReservoir(
        source(),
        uneven,
        N,
        min_reservoir_samples=N - N // 3,
        uid_column="uid",
        client=client,
        batched=True,
        rows_per_job=9,
        batch_size=1000,
    ) as r:
        got = collect(r)
        frame = r.to_pandas()
    v = np.arange(N)
    expected = {f"u{i:03d}": (0 if i % 3 == 0 else 2 if i % 5 == 0 else 1) for i in v}
    counts = frame["uid"].value_counts().to_dict()
    assert counts == {u: c for u, c in expected.items() if c}
    assert sorted(frame.loc[frame["uid"] == "u005", "copy"].tolist()) == [0, 1]
    assert len(got["uid"]) == sum(expected.values())


def test_extension_dtypes_come_back_in_pandas_batches_to_pandas_and_subsets(process_client: Client) -> None:
    expected = typed(source()).set_index("uid")
    with AsyncReservoir(
        source(),
        typed,
        N,
        min_reservoir_samples=N,
        uid_column="uid",
        client=process_client,
        batched=True,
        rows_per_job=13,
        batch_size=10,
        batch_format="pandas",
    ) as r:
        batches = list(r)
        table = r.to_pandas(["u007", "u002", "u004"])
        with r.subsample_uids(["u001", "u004"]) as sub:
            sub_batches = list(sub)
    for frame in [*batches, table, *sub_batches]:
        assert str(frame["parity"].dtype) == "category"
        assert list(frame["parity"].cat.categories) == ["odd", "even"]
        assert str(frame["label"].dtype) == "string"
        assert str(frame["when"].dtype).endswith("America/New_York]")
        assert str(frame["count"].dtype) == "Int64"
        want = expected.loc[frame["uid"].tolist()].reset_index()
        pd.testing.assert_frame_equal(frame[want.columns], want, check_index_type=False)
    assert table["uid"].tolist() == ["u007", "u002", "u004"]
    assert table["label"].isna().tolist() == [False, False, True]
    assert table["count"].isna().tolist() == [True, False, False]


def test_a_parquet_source_reads_only_the_selected_columns_on_the_workers(
    tmp_path: Any, process_client: Client
) -> None:
    frame = source(200)
    frame["unused"] = "x" * 50
    (tmp_path / "data").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        frame.iloc[part].to_parquet(tmp_path / "data" / f"part.{i}.parquet", index=False)
    parquet = dd.read_parquet(str(tmp_path / "data"), columns=["uid", "v"])

    def seen(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"uid": df["uid"], "v": df["v"] + 1, "columns": ",".join(df.columns)})

    with AsyncReservoir(
        parquet,
        seen,
        200,
        min_reservoir_samples=200,
        uid_column="uid",
        client=process_client,
        batched=True,
        rows_per_job=64,
        batch_size=200,
    ) as r:
        got = collect(r)
    assert sorted(got["uid"].tolist()) == sorted(frame["uid"].tolist())
    assert set(got["columns"].tolist()) == {"uid,v"}
    assert np.array_equal(np.sort(got["v"]), np.arange(200) + 1)


def bad_for_some(df: pd.DataFrame) -> Any:
    if (df["v"] == 13).any():
        return df.assign(uid="not-a-uid")  # UIDs not in the chunk
    if (df["v"] == 40).any():
        return 5  # not a table
    return df[["uid", "v"]]


def test_a_wrong_result_fails_its_chunk_and_the_run_goes_on(client: Client) -> None:
    with AsyncReservoir(
        source(),
        bad_for_some,
        N,
        min_reservoir_samples=N - 20,
        uid_column="uid",
        client=client,
        batched=True,
        rows_per_job=10,
        batch_size=100,
        max_failures_per_uid=1,
        source_sampler=SequentialSampler(),  # chunks of 10 consecutive rows
    ) as r:
        # the minimum can be reached before a failing chunk has come back: wait for both, and
        # for every other row, with a deadline
        iterate_until(r, lambda: len(r.stats().failures) == 20 and r.reservoir_size() == N - 20)
        got = collect(r)
        stats = r.stats()
    failed = {f.uid for f in stats.failures}
    assert failed == {f"u{i:03d}" for i in list(range(10, 20)) + list(range(40, 50))}
    assert sorted(got["uid"].tolist()) == sorted(set(source()["uid"]) - failed)
    message = next(f.message for f in stats.failures if f.uid == "u013")
    assert "bad_for_some" in message and "'u010'" in message and "not in the chunk" in message
    assert "got int" in next(f.message for f in stats.failures if f.uid == "u040")
    assert stats.rows_failed == 20


def test_on_error_raise_names_the_function_and_the_chunk(client: Client) -> None:
    r = AsyncReservoir(
        source(),
        bad_for_some,
        N,
        min_reservoir_samples=N,
        uid_column="uid",
        client=client,
        batched=True,
        rows_per_job=10,
        on_error="raise",
    )
    try:
        with pytest.raises(JobError, match=r"bad_for_some .*batched=True"):
            for _ in r:
                pass
    finally:
        r.close()


def test_auto_sized_chunks_load_everything(client: Client) -> None:
    with AsyncReservoir(
        source(600),
        features,
        600,
        min_reservoir_samples=600,
        uid_column="uid",
        client=client,
        batched=True,
        batch_size=600,
    ) as r:
        got = collect(r)
        stats = r.stats()
    assert sorted(got["uid"].tolist()) == sorted(source(600)["uid"].tolist())
    assert stats.rows_loaded >= 600 and stats.jobs_completed < stats.rows_loaded / 4  # chunks, not rows


def test_a_small_reservoir_replaces_entries_from_chunks(process_client: Client) -> None:
    """Chunks larger than the reservoir: slots are reused across epochs and values stay right."""
    with AsyncReservoir(
        source(),
        features,
        8,
        min_reservoir_samples=8,
        uid_column="uid",
        client=process_client,
        batched=True,
        rows_per_job=12,
        batch_size=4,
        max_reservoir_replacement_size=3,
    ) as r:
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline:  # epochs until fresh entries replaced old ones
            for batch in r:
                v = np.array([int(u[1:]) for u in batch["uid"]])
                assert np.array_equal(batch["double"], v * 2.0)
                assert np.array_equal(batch["vec"][:, 0], v.astype(np.float32))
                seen.update(batch["uid"].tolist())
        stats = r.stats()
    assert stats.entries_evicted >= 22 and len(seen) >= 30


def label(df: pd.DataFrame) -> pd.DataFrame:
    """A categorical whose categories are the labels present in this chunk only."""
    return pd.DataFrame(
        {"uid": df["uid"], "label": pd.Categorical(np.where(df["v"] % 20 < 10, "low", "high"))}
    )


def test_categoricals_of_chunks_with_other_categories_keep_every_value(client: Client) -> None:
    with AsyncReservoir(
        source(),
        label,
        N,
        min_reservoir_samples=N,
        uid_column="uid",
        client=client,
        batched=True,
        rows_per_job=10,  # chunks of 10 consecutive rows: "low" only or "high" only
        source_sampler=SequentialSampler(),
        batch_size=N,
        batch_format="pandas",
    ) as r:
        frame = next(iter(r))
        table = r.to_pandas()
    for got in (frame, table):
        v = got["uid"].str[1:].astype(int)
        assert got["label"].notna().all()
        assert (got["label"].astype(str) == np.where(v % 20 < 10, "low", "high")).all()
        assert set(got["label"].cat.categories) == {"low", "high"}


def raises_unpicklable(df: pd.DataFrame) -> pd.DataFrame:
    import threading

    raise ValueError("cannot open", threading.Lock())


def test_an_exception_that_cannot_travel_fails_the_chunk_once_naming_the_function(
    process_client: Client,
) -> None:
    with AsyncReservoir(
        source(12),
        raises_unpicklable,
        12,
        min_reservoir_samples=1,
        uid_column="uid",
        client=process_client,
        batched=True,
        rows_per_job=4,
        max_failures_per_uid=1,
        source_sampler=SequentialSampler(),
        timeout=60,
    ) as r:
        with pytest.raises(JobError, match="can still give an entry"):
            iter(r)
        stats = r.stats()
    assert stats.rows_failed == 12 and stats.jobs_failed == 0  # the task itself did not fail
    assert {f.exc_type for f in stats.failures} == {"ValueError"}
    assert all("raises_unpicklable" in f.message and "cannot open" in f.message for f in stats.failures)
