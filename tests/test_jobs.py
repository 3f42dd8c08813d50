"""The runner's dask tasks, without a cluster: keys, each source's task arguments, the function's task."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pytest

from dask_reservoir._runtime.jobs import GONE, FunctionPayload, function_key, job_call, load_key
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import PandasSource
from dask_reservoir._worker.calls import JobSpec, run_partition_rows, run_rows
from dask_reservoir._worker.chunks import run_chunk, run_partition_chunk
from dask_reservoir._worker.wire import Opaque, RowColumns


class FakeFuture:
    def __init__(self, key: str, status: str = "pending") -> None:
        self.key = key
        self.status = status
        self.released = False

    def release(self) -> None:
        self.released = True


class FakeClient:
    def __init__(self) -> None:
        self.submitted: list[tuple[Any, ...]] = []
        self.futures: list[FakeFuture] = []

    def submit(self, function: Any, *args: Any, key: str, pure: bool) -> FakeFuture:
        assert pure is False
        self.submitted.append((function, *args))
        future = FakeFuture(key)
        self.futures.append(future)
        return future


def user_function(row: dict[str, Any]) -> dict[str, Any]:  # module of tests: user code
    return row


def options() -> Any:
    return JobSpec.from_function(user_function, uid_column="uid", retries=0, rows_per_job=2).options()


def test_load_keys_are_readable_unique_and_safe() -> None:
    key = load_key("a b/c:d")
    prefix, _, unique = key.rpartition("-")
    assert prefix == "dask_reservoir-load-a_b_c_d"
    assert len(unique) == 32 and int(unique, 16) >= 0
    assert load_key("a b/c:d") != key
    assert load_key("x" * 100).startswith("dask_reservoir-load-" + "x" * 32 + "-")
    assert load_key(("t", 1)).startswith("dask_reservoir-load-__t___1_-")
    assert load_key("ok_1.2").startswith("dask_reservoir-load-ok_1.2-")


def test_function_keys_are_unique() -> None:
    first, second = function_key(), function_key()
    assert first.startswith("dask_reservoir-function-") and first != second
    assert first.startswith("dask_reservoir-")  # what wait_released looks for


def pandas_source() -> PandasSource:
    frame = pd.DataFrame({"uid": ["a", "b", "c"], "v": [1, 2, 3]})
    return PandasSource(uids=["a", "b", "c"], uid_column="uid", frame=frame)


def test_a_pandas_job_sends_its_rows_as_columns() -> None:
    payload = FakeFuture("f")
    opts = options()
    call = job_call(pandas_source(), [2, 0], ["c", "a"], options=opts, payload=payload, batched=False)  # type: ignore[arg-type]
    function, sent_options, sent_payload, rows, uids = call
    assert function is run_rows and sent_options is opts and sent_payload is payload
    assert isinstance(rows, RowColumns)
    assert rows.records() == [{"uid": "c", "v": 3}, {"uid": "a", "v": 1}]
    assert isinstance(uids, Opaque) and uids.value == ["c", "a"]


def test_a_batched_pandas_job_sends_one_chunk() -> None:
    call = job_call(
        pandas_source(), [1, 2], ["b", "c"], options=options(), payload=FakeFuture("f"), batched=True
    )  # type: ignore[arg-type]
    function, _, _, chunk, uids = call
    assert function is run_chunk
    assert isinstance(chunk, Opaque) and chunk.value["v"].tolist() == [2, 3]
    assert uids.value == ["b", "c"]


def dask_source(statuses: list[str]) -> DaskSource:
    return DaskSource(
        uids=["a", "b", "c", "d"],
        uid_column="uid",
        rows=[(0, 0), (0, 1), (1, 0), (2, 0)],
        lengths=[2, 1, 1],
        parts=[FakeFuture(f"part-{i}", status) for i, status in enumerate(statuses)],  # type: ignore[misc]
    )


@pytest.mark.parametrize(("batched", "run"), [(False, run_partition_rows), (True, run_partition_chunk)])
def test_a_dask_job_sends_the_partitions_holding_its_rows(batched: bool, run: Any) -> None:
    source = dask_source(["finished", "finished", "finished"])
    call = job_call(
        source, [2, 0, 1], ["c", "a", "b"], options=options(), payload=FakeFuture("f"), batched=batched
    )  # type: ignore[arg-type]
    function, _, _, parts, refs, uids = call
    assert function is run
    assert parts == {0: source.parts[0], 1: source.parts[1]}  # not partition 2
    assert refs.value == [(1, 0), (0, 0), (0, 1)]
    assert uids.value == ["c", "a", "b"]


def test_lost_partitions_are_persisted_again_first(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = dask_source(["lost", "finished", "cancelled"])
    renewed: list[list[int]] = []

    def renew(indices: list[int]) -> None:
        renewed.append(list(indices))
        for i in indices:
            source.parts[i] = FakeFuture(f"part-{i}-again", "pending")  # type: ignore[call-overload]

    monkeypatch.setattr(source, "renew_partitions", renew)
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        call = job_call(source, [0, 3], ["a", "d"], options=options(), payload=FakeFuture("f"), batched=False)  # type: ignore[arg-type]
    assert renewed == [[0, 2]]
    assert {p: f.key for p, f in call[3].items()} == {0: "part-0-again", 2: "part-2-again"}
    assert "partitions [0, 2] of the dask source were lost" in caplog.text


def test_gone_lists_the_statuses_of_a_result_that_never_comes() -> None:
    assert set(GONE) == {"cancelled", "lost", "error"}


def spec(by_value: bool) -> JobSpec:
    return JobSpec.from_function(
        user_function, uid_column="uid", retries=0, rows_per_job=1, by_value=by_value
    )


def test_the_function_is_sent_once_and_again_when_lost() -> None:
    client = FakeClient()
    shipped = FunctionPayload(client, spec(False))  # type: ignore[arg-type]
    first = shipped.future()
    assert shipped.future() is first and len(client.submitted) == 1
    assert client.submitted[0][1] == shipped.spec.payload
    assert first.key.startswith("dask_reservoir-function-")
    for status in GONE:
        lost = client.futures[-1]
        lost.status = status
        again = shipped.future()
        assert again is not lost and lost.released
    assert len(client.submitted) == 1 + len(GONE)


def test_a_function_of_user_code_switches_to_by_value_once(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    shipped = FunctionPayload(client, spec(False))  # type: ignore[arg-type]
    assert shipped.package == "tests" and not shipped.spec.by_value
    by_reference = shipped.future()
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        shipped.to_by_value("worker(s) ['tcp://w'] cannot import 'tests'")
    assert shipped.spec.by_value and by_reference.released
    assert "worker(s) ['tcp://w'] cannot import 'tests'; function_to_run now travels by value" in caplog.text
    by_value = shipped.future()
    assert by_value is not by_reference and client.submitted[-1][1] == shipped.spec.payload
    assert client.submitted[-1][1] != client.submitted[0][1]
    caplog.clear()
    shipped.to_by_value("again")
    assert caplog.text == "" and not by_value.released  # already by value: nothing changes
    assert repr(shipped) == "<FunctionPayload: package='tests' by_value=True task=pending>"


def test_detach_hands_over_the_functions_task() -> None:
    client = FakeClient()
    shipped = FunctionPayload(client, spec(True))  # type: ignore[arg-type]
    assert shipped.detach() is None
    future = shipped.future()
    assert shipped.detach() is future and not future.released
    assert shipped.detach() is None
    assert shipped.future() is not future  # sent again when asked again
