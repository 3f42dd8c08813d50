"""What the function returns, end to end: values that round-trip, values refused, shape changes."""

from __future__ import annotations

import json
import re
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, JobError, SequentialSampler, collate_rows
from tests.utils import frame, iterate_until

PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3
"""pandas 3 stores strings in its own dtype; pandas 2 as Python objects."""


def with_a_lock_for_two(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    meta: dict[str, Any] = {"site": "A"}
    if v == 2:
        meta["lock"] = threading.Lock()  # cannot be copied into a batch
    return {"x": np.float32(v), "meta": meta}


def test_a_value_that_cannot_be_copied_is_that_uids_failure(client: Client) -> None:
    """The review's case: stored, then every epoch raised a bare TypeError naming nothing."""
    with AsyncReservoir(
        frame(5), with_a_lock_for_two, 5, min_reservoir_samples=4, client=client, max_failures_per_uid=1
    ) as r:
        # UID 2 fails when it is ingested; epochs keep working meanwhile and after
        iterate_until(r, lambda: 2 in r.stats().quarantined)
        for _ in range(3):
            served = sorted(int(u) for b in r for u in b["sample_uid"])
            assert served == [0, 1, 3, 4]
        record = r.stats().quarantined[2]
        assert record.exc_type == "StoreError"
        assert "column 'meta' holds a dict for UID 2 that cannot be deep-copied" in record.message


def matrix_for_one(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    x = np.full((1, 2), v, np.float32)
    with warnings.catch_warnings():  # numpy discourages matrix; users still return them
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return {"x": np.asmatrix(x) if v == 1 else x}


def test_a_numpy_matrix_is_refused_with_its_column(client: Client) -> None:
    with AsyncReservoir(frame(3), matrix_for_one, 3, min_reservoir_samples=2, client=client) as r:
        iterate_until(r, lambda: bool(r.stats().failures))  # UID 1 fails when it is ingested
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == [0, 2]
        (record,) = r.stats().failures
        assert record.uid == 1 and "column 'x' holds a numpy.matrix for UID 1" in record.message


def variable_length(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {"tokens": np.arange(v + 1, dtype=np.int64)}


def pad(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    width = max(len(r["tokens"]) for r in rows)
    padded = [{**r, "tokens": np.pad(r["tokens"], (0, width - len(r["tokens"])))} for r in rows]
    return collate_rows(padded)


def test_variable_shapes_warn_once_per_column(client: Client) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with AsyncReservoir(
            frame(30),
            variable_length,
            30,
            min_reservoir_samples=30,
            client=client,
            batch_size=10,
            collate_fn=pad,
        ) as r:
            batches = list(r)
    assert [b["tokens"].shape[1] for b in batches] == [10, 20, 30]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    assert re.search(
        r"^column 'tokens' changed from int64 array of shape \(\d+,\) to int64 array of shape \(\d+,\) "
        r"at UID \d+: .*warned once per column",
        messages[0],
    )


ROUND_TRIP: dict[str, Any] = {
    "when": np.datetime64("2026-01-02T03:04:05", "ns"),
    "days": np.array(["2026-01-01", "2026-02-01"], dtype="datetime64[D]"),
    "lag": np.timedelta64(90, "s"),
    "flag": np.bool_(True),
    "z": np.complex64(1 - 2j),
    "code": np.array(["ab", "cd"], dtype="<U2"),
    "raw": np.array([b"x", b"yz"], dtype="S2"),
    "meta": {"tags": ["a", "b"]},
}


def every_dtype(row: dict[str, Any]) -> dict[str, Any]:
    return dict(ROUND_TRIP)


def test_every_dtype_round_trips_across_processes(process_client: Client) -> None:
    with AsyncReservoir(
        frame(4), every_dtype, 4, min_reservoir_samples=4, client=process_client, batch_size=4
    ) as r:
        iterate_until(r, lambda: r.stats().entries_ingested >= 8)
        (batch,) = list(r)
    for name, value in ROUND_TRIP.items():
        column = batch[name]
        assert len(column) == 4
        for item in column:
            if isinstance(value, np.ndarray):
                assert item.dtype == value.dtype and (item == value).all(), name
            else:
                assert item == value, name
    assert batch["when"].dtype == np.dtype("datetime64[ns]") and batch["lag"].dtype == np.dtype(
        "timedelta64[s]"
    )


@pytest.mark.parametrize("cluster", ["threads", "processes"])
def test_augmenting_batches_never_changes_the_store(
    cluster: str, client: Client, process_client: Client
) -> None:
    chosen = client if cluster == "threads" else process_client

    def augment(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        for row in rows:
            row["tokens"] *= 2  # in place, as augmentation code does
            row["tokens"] += 1
        return pad(rows)

    with (
        AsyncReservoir(
            frame(6),
            variable_length,
            6,
            min_reservoir_samples=6,
            client=chosen,
            batch_size=6,
            collate_fn=augment,
        ) as r,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)
        first = [b["tokens"].copy() for b in r]
        for _ in range(3):
            again = [b["tokens"] for b in r]
            assert all((a == f).all() for a, f in zip(again, first, strict=True))


def empty_for_three(row: dict[str, Any]) -> Any:
    return [] if int(row["value"]) == 3 else {"x": np.float32(row["value"])}


def test_the_minimum_error_names_uids_that_returned_no_rows(client: Client) -> None:
    with AsyncReservoir(frame(4), empty_for_three, 4, min_reservoir_samples=4, client=client) as r:
        with pytest.raises(JobError, match=r"\(0 quarantined, 1 whose last result had no rows: \[3\]\)"):
            iter(r)


UID_KINDS: dict[str, np.ndarray] = {
    "uint64 hashes": np.array([2**63, 2**63 + 1, 2**64 - 1, 5, 6, 7], np.uint64),
    "int64": np.array([-3, 2**62, 0, 5, 6, 7], np.int64),
    "str": np.array(["f", "e", "dd", "c", "b", "a"], dtype=object),
}


def value_by_position(row: dict[str, Any]) -> dict[str, Any]:
    return {"x": np.int64(row["value"])}


@pytest.mark.parametrize("kind", list(UID_KINDS))
def test_uids_come_back_exact_with_the_source_dtype(client: Client, kind: str) -> None:
    """uint64 UIDs >= 2**63 mixed with small ones came back as float64 (4 distinct values of 6)."""
    uids = UID_KINDS[kind]
    source = pd.DataFrame({"sample_uid": uids, "value": np.arange(len(uids))})
    value_of = {u: i for i, u in enumerate(uids.tolist())}
    numpy_kind = "U" if kind == "str" else uids.dtype.kind
    pandas_dtype = ("str" if PANDAS_3 else object) if kind == "str" else uids.dtype  # pandas 2: objects

    def check(got_uids: Any, xs: Any, what: str) -> None:
        assert [value_of[u] for u in got_uids] == [int(x) for x in xs], what  # every row matches its UID

    with AsyncReservoir(
        source, value_by_position, 6, min_reservoir_samples=6, client=client, batch_size=6
    ) as r:
        batch = next(iter(r))
        assert batch["sample_uid"].dtype.kind == numpy_kind and sorted(
            batch["sample_uid"].tolist()
        ) == sorted(uids.tolist())
        check(batch["sample_uid"].tolist(), batch["x"], "numpy batch")
        whole = r.to_pandas()
        assert whole["sample_uid"].tolist() == uids.tolist()  # source order, exact
        assert whole["sample_uid"].dtype == pandas_dtype
        check(whole["sample_uid"], whole["x"], "to_pandas")
        picked = [uids[4], uids[1], uids[2]]
        with r.subsample_uids(picked, new_sampler=SequentialSampler()) as sub:
            got = next(iter(sub))
            assert got["sample_uid"].tolist() == [p.item() if hasattr(p, "item") else p for p in picked]
            check(got["sample_uid"].tolist(), got["x"], "subsample_uids")
        state = json.loads(json.dumps(r.state_dict()))
    with AsyncReservoir(
        source,
        value_by_position,
        6,
        min_reservoir_samples=6,
        client=client,
        batch_size=6,
        batch_format="pandas",
    ) as resumed:
        resumed.load_state_dict(state)
        frame_batch = next(iter(resumed))
        assert frame_batch["sample_uid"].dtype == pandas_dtype
        assert sorted(frame_batch["sample_uid"].tolist()) == sorted(uids.tolist())
        check(frame_batch["sample_uid"], frame_batch["x"], "restored pandas batch")


def wider_for_two(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {"x": np.full(3 if v == 2 else 2, v, np.float32)}


def test_a_row_of_another_shape_is_that_uids_failure(client: Client) -> None:
    """It was stored, and every epoch it was in raised at collate; never recorded, never quarantined."""
    with AsyncReservoir(
        frame(6),
        wider_for_two,
        6,
        min_reservoir_samples=4,
        client=client,
        batch_size=6,
        max_failures_per_uid=2,
    ) as r:
        iterate_until(r, lambda: 2 in r.stats().quarantined)  # every epoch meanwhile works
        for _ in range(2):
            served = [b for b in r]
            assert sorted(int(u) for b in served for u in b["sample_uid"]) == [0, 1, 3, 4, 5]
            assert all((b["x"][:, 0] == b["sample_uid"]).all() for b in served)
        stats = r.stats()
        record = stats.quarantined[2]
        # quarantined at its second failure; an attempt already submitted by then may add one more
        assert record.exc_type == "StoreError" and record.count >= 2
        assert record.consecutive == record.count  # never a success in between
        assert record.message.startswith("column 'x' holds an array of shape (3,) for UID 2 but the stored")
        # a refused row is a failed row, not a loaded one: the balance of rows still holds
        assert stats.rows_failed >= 2
        assert stats.rows_submitted == (
            stats.rows_loaded
            + stats.rows_failed
            + stats.rows_requeued
            + stats.rows_cancelled
            + stats.rows_in_flight
        )


_BUFFERS: dict[int, np.ndarray] = {}


def into_its_own_buffer(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A loader filling one preallocated buffer per thread, as fast loaders do."""
    buffer = _BUFFERS.setdefault(threading.get_ident(), np.zeros(4, np.float32))
    buffer[:] = row["value"]  # raised "assignment destination is read-only" after the first row
    return [{"x": buffer}, {"x": buffer + 100}]  # two rows: kept as rows, not copied into the table


def test_a_function_may_fill_its_own_buffer_again(client: Client) -> None:
    """On a threaded cluster the store made the function's array read-only in place: every row failed."""
    with AsyncReservoir(
        frame(8), into_its_own_buffer, 8, min_reservoir_samples=8, client=client, batch_size=8
    ) as r:
        for _ in range(2):
            batch = next(iter(r))
            assert (batch["x"][0::2, 0] == batch["sample_uid"][0::2]).all()  # each row its own values
            assert (batch["x"][1::2, 0] == batch["sample_uid"][1::2] + 100).all()
        assert not r.stats().failures
        assert all(b.flags.writeable for b in _BUFFERS.values())
