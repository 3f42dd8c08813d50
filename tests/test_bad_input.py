"""Table-driven bad inputs: each ends in a clear error or a recorded failure, leaving nothing behind."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, ReservoirClosedError, Sampler
from tests.utils import frame, iterate_until, load_value, poll_for

pytestmark = pytest.mark.timeout(60)


class OutOfRange(Sampler):
    def indices(self, n: int, *, epoch: int) -> list[int]:
        return [n + 3]


def make(client: Client, **kwargs: Any) -> AsyncReservoir:
    args = {"source": frame(4), "function_to_run": load_value, "max_reservoir_samples": 4, **kwargs}
    return AsyncReservoir(
        args.pop("source"),
        args.pop("function_to_run"),
        args.pop("max_reservoir_samples"),
        client=client,
        **args,
    )


CONSTRUCTOR_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("max zero", {"max_reservoir_samples": 0}, ValueError, "max_reservoir_samples must be >= 1, got 0"),
    ("max str", {"max_reservoir_samples": "8"}, TypeError, "max_reservoir_samples must be an int, got str"),
    ("min zero", {"min_reservoir_samples": 0}, ValueError, "min_reservoir_samples must be >= 1"),
    (
        "min > max",
        {"min_reservoir_samples": 5},
        ValueError,
        "min_reservoir_samples=5 > max_reservoir_samples=4",
    ),
    ("uid column empty", {"uid_column": ""}, TypeError, "uid_column must be a non-empty str"),
    ("bound zero", {"max_jobs_at_once": 0}, ValueError, "max_jobs_at_once must be >= 1"),
    ("prefetch negative", {"prefetch_batches": -1}, ValueError, r"prefetch_batches must be >= 0 .*got -1"),
    (
        "prefetch float",
        {"prefetch_batches": 1.5},
        TypeError,
        "prefetch_batches must be an int, got float: 1.5",
    ),
    ("prefetch bool", {"prefetch_batches": True}, TypeError, "prefetch_batches must be an int, got bool"),
    (
        "reservoir sampler",
        {"reservoir_sampler": object()},
        TypeError,
        "reservoir_sampler must be None or a Sampler",
    ),
    ("source sampler", {"source_sampler": "random"}, TypeError, "source_sampler must be None or a Sampler"),
    ("batch size", {"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    ("drop_last", {"drop_last": "no"}, TypeError, "drop_last must be a bool, got str"),
    ("collate_fn", {"collate_fn": 1}, TypeError, "collate_fn must be callable or None, got int"),
    (
        "epoch cap",
        {"maximum_number_of_samples_per_epoch": 0},
        ValueError,
        "maximum_number_of_samples_per_epoch must be >= 1",
    ),
    (
        "replacement cap",
        {"max_reservoir_replacement_size": 0},
        ValueError,
        "max_reservoir_replacement_size must be >= 1",
    ),
    ("rows per job", {"rows_per_job": 0}, ValueError, "rows_per_job must be >= 1, got 0"),
    ("retries", {"retries": -1}, ValueError, "retries must be >= 0, got -1"),
    (
        "on_error",
        {"on_error": "ignore"},
        ValueError,
        r"on_error must be one of \['skip', 'raise'\], got 'ignore'",
    ),
    ("timeout", {"timeout": -1}, ValueError, "timeout must be > 0 seconds or None, got -1"),
    ("job_timeout", {"job_timeout": "soon"}, ValueError, "job_timeout must be seconds .*got 'soon'"),
    (
        "max failures",
        {"max_failures_per_uid": 0},
        ValueError,
        "max_failures_per_uid must be >= 1 or None, got 0",
    ),
    (
        "on_cluster_loss",
        {"on_cluster_loss": "wait"},
        ValueError,
        r"on_cluster_loss must be one of \['raise', 'serve'\]",
    ),
    ("nb_workers with client", {"nb_workers": 2}, ValueError, "nb_workers applies only when"),
    ("function None", {"function_to_run": None}, TypeError, "function_to_run must be callable, got NoneType"),
    (
        "source list",
        {"source": [1, 2]},
        TypeError,
        "source must be a pandas.DataFrame or a dask.dataframe.DataFrame, got builtins.list",
    ),
    ("source array", {"source": np.zeros(3)}, TypeError, "got numpy.ndarray"),
    ("source empty", {"source": pd.DataFrame({"a": []})}, ValueError, "at least one row"),
    (
        "duplicate uids",
        {"source": pd.DataFrame({"sample_uid": [1, 2, 2, 3, 3]})},
        ValueError,
        r"duplicate UIDs \[2, 3\]",
    ),
    (
        "NaN uids",
        {"source": pd.DataFrame({"sample_uid": [1.0, float("nan")]})},
        ValueError,
        r"missing values .* positions \[1\]",
    ),
    (
        "None uids",
        {"source": pd.DataFrame({"sample_uid": ["a", None, "c"]})},
        ValueError,
        r"missing values .* positions \[1\]",
    ),
    (
        "unhashable uids",
        {"source": pd.DataFrame({"sample_uid": [[1], [2]]})},
        TypeError,
        "hashable values, got list .* position 0",
    ),
    (
        "dask duplicate uids",
        {"source": dd.from_pandas(pd.DataFrame({"sample_uid": [5, 5]}), npartitions=1)},
        ValueError,
        r"duplicate UIDs \[5\]",
    ),
]


def no_leftovers(client: Client) -> None:
    poll_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("dask_reservoir-")], what="threads"
    )
    poll_for(lambda: len(client.futures) == 0, what="futures")


@pytest.mark.parametrize(
    "name, kwargs, error, match", CONSTRUCTOR_CASES, ids=[c[0] for c in CONSTRUCTOR_CASES]
)
def test_bad_constructor_input(
    client: Client, name: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make(client, **kwargs)
    no_leftovers(client)


def _none(row: dict[str, Any]) -> Any:
    return None


def _scalar(row: dict[str, Any]) -> Any:
    return 3.5


def _int_key(row: dict[str, Any]) -> Any:
    return {0: 1}


def _mixed_objects(row: dict[str, Any]) -> Any:
    return {"x": np.array([1, "a", None], dtype=object)}


def _list_of_str(row: dict[str, Any]) -> Any:
    return ["a"]


RESULT_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("None", _none, r"got NoneType for UID \d"),
    ("scalar", _scalar, r"got float for UID \d"),
    ("non-str key", _int_key, r"non-str key 0 \(int\) for UID \d"),
    ("object array", _mixed_objects, r"column 'x' as an object-dtype array for UID \d"),
    ("list of str", _list_of_str, r"list holding a str at index 0 for UID \d"),
]


@pytest.mark.parametrize("name, function, match", RESULT_CASES, ids=[c[0] for c in RESULT_CASES])
def test_bad_results_are_recorded_failures(
    client: Client, name: str, function: Callable[[dict[str, Any]], Any], match: str
) -> None:
    with make(client, function_to_run=function, max_failures_per_uid=1) as r:
        poll_for(lambda: len(r.stats().quarantined) == 4, what="every UID to fail")
        failures = r.stats().failures
        assert {f.uid for f in failures} == {0, 1, 2, 3}
        assert all(f.exc_type == "JobError" for f in failures)
        assert all(pytest.approx(1) == f.count for f in failures)
        import re

        assert all(re.search(match, f.message) for f in failures), failures
    no_leftovers(client)


def _columns_differ(row: dict[str, Any]) -> Any:
    return {"a": 1} if row["value"] % 2 else {"b": 1}


def _shapes_differ(row: dict[str, Any]) -> Any:
    return {"x": np.full(1 + row["value"] % 2, row["value"])}


@pytest.mark.parametrize(
    "function, match",
    [
        (_columns_differ, r"^UID \d has columns \['\w', 'sample_uid'\] but the stored rows \(UID \d among"),
        (_shapes_differ, r"^column 'x' holds an array of shape \(\d,\) for UID \d but the stored rows"),
    ],
    ids=["columns differ", "shapes differ"],
)
def test_inconsistent_rows_in_one_batch(
    client: Client, function: Callable[[dict[str, Any]], Any], match: str
) -> None:
    """Rows the default collate cannot stack failed every epoch they were in; now they fail their UID.

    The first entry stored sets the columns and shapes: UIDs of the other parity are refused.
    """
    with make(
        client, function_to_run=function, min_reservoir_samples=2, batch_size=4, max_failures_per_uid=1
    ) as r:
        iterate_until(r, lambda: len(r.stats().quarantined) == 2)  # no epoch raises meanwhile
        served = sorted(int(u) for b in r for u in b["sample_uid"])
        refused = sorted(int(u) for u in r.stats().quarantined)
        assert sorted(served + refused) == [0, 1, 2, 3] and len({u % 2 for u in served}) == 1
        for record in r.stats().quarantined.values():
            assert record.exc_type == "StoreError" and re.search(match, record.message), record.message
        assert r.reservoir_size() == 2
    no_leftovers(client)


def test_collate_fn_that_raises_leaves_reservoir_usable(client: Client) -> None:
    calls = {"n": 0}

    def collate(rows: list[dict[str, Any]]) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("user collate bug")
        return len(rows)

    with make(client, min_reservoir_samples=4, batch_size=2, collate_fn=collate) as r:
        with pytest.raises(ZeroDivisionError, match="user collate bug"):
            list(r)
        assert list(r) == [2, 2]
    no_leftovers(client)


def test_sampler_out_of_range(client: Client) -> None:
    with make(client, min_reservoir_samples=4, reservoir_sampler=OutOfRange()) as r:
        with pytest.raises(
            ValueError, match=r"reservoir_sampler .* must yield indices in range\(4\).*got \[7\]"
        ):
            iter(r)
    no_leftovers(client)


def test_source_sampler_out_of_range(client: Client) -> None:
    with make(client, source_sampler=OutOfRange()) as r:
        with pytest.raises(
            ValueError,
            match=r"source_sampler .* must yield indices in range\(4\) \(4 source rows\), got \[7\]",
        ):
            iter(r)
    no_leftovers(client)


def test_batch_size_larger_than_reservoir(client: Client) -> None:
    with make(client, min_reservoir_samples=4, batch_size=10) as r:
        (batch,) = list(r)
        assert len(batch["label"]) == 4
    with make(client, min_reservoir_samples=4, batch_size=10, drop_last=True) as r:
        with pytest.warns(UserWarning, match="batch_size=10 is larger than the 4 entries .* yields no batch"):
            assert list(r) == []
    no_leftovers(client)


def test_subsample_bad_arguments(client: Client) -> None:
    with make(client, min_reservoir_samples=4) as r:
        list(r)
        with pytest.raises(ValueError, match="uids_name must be a column of the source, got 'nope'"):
            r.subsample_uids([1], uids_name="nope")
        with pytest.raises(KeyError, match=r"UIDs not in the source column 'sample_uid': \[9, 'x'\]"):
            r.subsample_uids([1, 9, "x"])
        with pytest.raises(ValueError, match="nb_samples must be between 1 and the 4 source rows, got 0"):
            r.subsample(0)
        with pytest.raises(TypeError, match="new_sampler must be None or a Sampler"):
            r.subsample_uids([1], new_sampler=3)  # type: ignore[arg-type]
        assert len(list(r)) == 4  # still usable
    no_leftovers(client)


def test_iterating_after_close_and_close_during_iteration(client: Client) -> None:
    r = make(client, min_reservoir_samples=4, batch_size=1)
    it = iter(r)
    next(it)
    closer = threading.Thread(target=r.close)
    closer.start()
    closer.join(10)
    with pytest.raises(ReservoirClosedError):
        next(it)
    with pytest.raises(ReservoirClosedError):
        iter(r)
    r.close()
    no_leftovers(client)


@pytest.fixture
def reservoir(client: Client) -> Iterator[AsyncReservoir]:
    r = make(client, min_reservoir_samples=4, batch_size=2)
    yield r
    r.close()


def test_two_threads_iterating(reservoir: AsyncReservoir) -> None:
    counts: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            n = sum(len(b["label"]) for b in reservoir)
            with lock:
                counts.append(n)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counts == [4] * 40
