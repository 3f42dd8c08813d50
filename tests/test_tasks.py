"""Worker-side trampoline: per-row outcomes, retries, dask partition rows (pure; run in-process)."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from dask_reservoir import JobError
from dask_reservoir._core.blocks import ChunkLoaded, as_rows
from dask_reservoir._core.records import RowFailed, RowLoaded
from dask_reservoir._worker.calls import JobSpec, Outcomes, _loaded_outcomes, run_partition_rows, run_rows
from dask_reservoir._worker.shipping import FunctionLoadError


def _fail_on_two(row: dict) -> dict:
    if row["v"] == 2:
        raise ValueError(f"bad row {row['v']}")
    return {"y": row["v"] + 1}


def test_run_rows_packed_records_each_outcome() -> None:
    spec = JobSpec.from_function(_fail_on_two, uid_column="uid", retries=1, rows_per_job=3)
    assert spec.attempts == 2 and not spec.reraise
    out = run_rows(spec.options(), spec.payload, [{"v": 1, "uid": "a"}, {"v": 2, "uid": "b"}], ["a", "b"])
    assert out[0].uid == "a" and out[0].rows == [{"y": 2, "uid": "a"}]
    assert isinstance(out[0], RowLoaded) and out[0].seconds >= 0.0
    failed = out[1]
    assert isinstance(failed, RowFailed)
    assert (failed.uid, failed.exc_type, failed.message) == ("b", "ValueError", "bad row 2")
    assert "_fail_on_two" in failed.traceback and isinstance(failed.exception, ValueError)
    pickle.dumps(out)  # outcomes must travel back from a worker


def test_run_rows_single_reraises_for_dask_retries() -> None:
    spec = JobSpec.from_function(_fail_on_two, uid_column="uid", retries=2, rows_per_job=1)
    assert spec.reraise and spec.attempts == 1
    with pytest.raises(ValueError, match="bad row 2"):
        run_rows(spec.options(), spec.payload, [{"v": 2}], ["b"])


_CALLS: list[int] = []


def _flaky(row: dict) -> dict:
    _CALLS.append(1)
    if len(_CALLS) == 1:
        raise OSError("transient")
    return {"ok": True}


def test_packed_retry_succeeds_on_second_attempt() -> None:
    """Module-level functions travel by reference, so the counter is shared here."""
    _CALLS.clear()
    flaky = _flaky
    calls = _CALLS
    spec = JobSpec.from_function(flaky, uid_column="uid", retries=1, rows_per_job=2, by_value=False)
    assert isinstance(run_rows(spec.options(), spec.payload, [{}], [0])[0], RowLoaded)
    assert len(calls) == 2


def test_unpicklable_exception_travels_as_text() -> None:
    class Local(Exception):
        pass

    def boom(row: dict) -> dict:
        raise Local("local class")

    spec = JobSpec.from_function(boom, uid_column="uid", retries=0, rows_per_job=2)
    out = run_rows(spec.options(), spec.payload, [{}], [0])[0]
    assert out.exc_type == "Local" and out.message == "local class"


def test_run_partition_rows() -> None:
    spec = JobSpec.from_function(
        lambda row: {"double": row["v"] * 2}, uid_column="uid", retries=0, rows_per_job=2
    )
    parts = {0: pd.DataFrame({"v": [1, 2]}), 1: pd.DataFrame({"v": [3]})}
    out = run_partition_rows(spec.options(), spec.payload, parts, [(1, 0), (0, 1)], ["c", "b"])
    assert type(out) is ChunkLoaded  # every row loaded into one row of one kind: packed as columns
    assert [o.rows for o in as_rows(out)] == [[{"double": 6, "uid": "c"}], [{"double": 4, "uid": "b"}]]


def test_run_partition_rows_keeps_order_across_interleaved_partitions() -> None:
    spec = JobSpec.from_function(lambda row: {"v": row["v"]}, uid_column="uid", retries=0, rows_per_job=4)
    parts = {0: pd.DataFrame({"v": [10, 11, 12]}), 1: pd.DataFrame({"v": [20, 21]})}
    refs = [(0, 2), (1, 1), (0, 0), (1, 0)]
    out = run_partition_rows(spec.options(), spec.payload, parts, refs, ["a", "b", "c", "d"])
    assert [(o.uid, o.rows[0]["v"]) for o in as_rows(out)] == [("a", 12), ("b", 21), ("c", 10), ("d", 20)]


def test_uid_column_mismatch_is_that_rows_failure() -> None:
    spec = JobSpec.from_function(
        lambda row: dict(row, uid="other"), uid_column="uid", retries=0, rows_per_job=2
    )
    ok, bad = run_rows(spec.options(), spec.payload, [{"uid": "a"}, {"uid": "b"}], ["other", "b"])
    assert isinstance(ok, RowLoaded) and isinstance(bad, RowFailed)
    assert bad.uid == "b" and "'other' in the UID column 'uid'" in bad.message


def test_dask_rows_are_checked_against_their_uid_on_the_worker() -> None:
    spec = JobSpec.from_function(lambda row: {"v": row["v"]}, uid_column="uid", retries=0, rows_per_job=3)
    parts = {0: pd.DataFrame({"uid": ["b", "a"], "v": [2, 1]})}  # read in another order than expected
    out = run_partition_rows(spec.options(check_uid=True), spec.payload, parts, [(0, 0), (0, 1)], ["a", "a2"])
    assert [type(o) for o in out] == [RowFailed, RowFailed]
    assert "has UID 'b' in column 'uid', expected UID 'a'" in out[0].message
    good = run_partition_rows(spec.options(check_uid=True), spec.payload, parts, [(0, 1)], ["a"])
    assert good[0].rows == [{"v": 1, "uid": "a"}]
    single = JobSpec.from_function(lambda row: row, uid_column="uid", retries=0, rows_per_job=1)
    with pytest.raises(JobError, match="expected UID 'a'"):  # one row per task: the task fails
        run_partition_rows(single.options(check_uid=True), single.payload, parts, [(0, 0)], ["a"])


def test_function_that_cannot_be_loaded_says_so() -> None:
    with pytest.raises(FunctionLoadError, match="cannot load function_to_run"):
        run_rows(
            JobSpec.from_function(len, uid_column="u", retries=0, rows_per_job=1).options(), _MISSING, [], []
        )


_MISSING = b"cno_such_module_here\nf\n."  # a pickled reference to a module this process lacks


def _frames_on_the_wire(result: object) -> int:
    """Frames of a worker's ``get_data`` reply holding ``result`` (as the worker sends it)."""
    from distributed.protocol import dumps
    from distributed.protocol.serialize import Serialize

    return len(dumps({"status": "OK", "data": {"key": Serialize(result)}}))


def test_outcomes_travel_as_one_pickle_not_one_frame_per_row() -> None:
    # a list value does not pack into columns: the outcomes travel as they are
    spec = JobSpec.from_function(lambda row: {"y": [row["v"]]}, uid_column="uid", retries=0, rows_per_job=2)
    rows = [{"v": i} for i in range(200)]
    out = run_rows(spec.options(), spec.payload, rows, list(range(200)))
    assert type(out) is Outcomes
    # dask serialises a plain list item by item, a frame each (about 20 us per row here)
    assert _frames_on_the_wire(list(out)) > 200
    assert _frames_on_the_wire(out) == _frames_on_the_wire(Outcomes(out[:1])) < 5
    back = pickle.loads(pickle.dumps(out))
    assert type(back) is Outcomes and back == out and all(type(o) is RowLoaded for o in back)
    parts = {0: pd.DataFrame({"v": [1, 2]})}
    assert type(run_partition_rows(spec.options(), spec.payload, parts, [(0, 0)], ["a"])) is Outcomes


def test_outcomes_pack_loaded_rows_as_columns_and_keep_failures() -> None:
    loaded = Outcomes([RowLoaded("a", [{"x": 1}], 0.5), RowLoaded("b", [], 0.25)])
    function, args = loaded.__reduce__()
    assert function is _loaded_outcomes and args == (["a", "b"], [[{"x": 1}], []], [0.5, 0.25])
    mixed = Outcomes([RowLoaded("a", [{"x": 1}], 0.5), RowFailed("b", "ValueError", "bad", "tb", None, 0.1)])
    back = pickle.loads(pickle.dumps(mixed))
    assert back == mixed and [type(o) for o in back] == [RowLoaded, RowFailed]
    assert pickle.loads(pickle.dumps(Outcomes())) == []
