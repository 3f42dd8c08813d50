"""The runner's dask tasks on a real cluster: keys, each source's task (run on the workers), the function's task."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from distributed import Client, Future, LocalCluster

from dask_reservoir._core.blocks import ChunkLoaded, as_rows
from dask_reservoir._runtime.jobs import GONE, FunctionPayload, function_key, job_call, load_key
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.make import make_source
from dask_reservoir._source.pandas_source import PandasSource
from dask_reservoir._worker.calls import JobSpec, run_partition_rows, run_rows
from dask_reservoir._worker.chunks import run_chunk, run_partition_chunk
from dask_reservoir._worker.shipping import load_function
from dask_reservoir._worker.wire import Opaque, RowColumns
from tests.utils import poll_for


def user_function(row: dict[str, Any]) -> dict[str, Any]:  # module of tests: user code
    return row


def options() -> Any:
    return JobSpec.from_function(user_function, uid_column="uid", retries=0, rows_per_job=2).options()


def spec(by_value: bool) -> JobSpec:
    return JobSpec.from_function(
        user_function, uid_column="uid", retries=0, rows_per_job=1, by_value=by_value
    )


# Threaded clusters run their tasks in this process: HOLD keeps a worker's thread busy.
HOLD = threading.Event()
STARTED = threading.Event()


def busy() -> None:
    STARTED.set()
    HOLD.wait(30)


@pytest.fixture(autouse=True)
def _nothing_held() -> Iterator[None]:
    HOLD.clear()
    STARTED.clear()
    yield
    HOLD.set()


@contextmanager
def small_cluster(workers: int) -> Iterator[tuple[LocalCluster, Client]]:
    """A threaded LocalCluster the test owns, whose tasks fail once a worker dies under them."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        try:
            yield cluster, client
        finally:  # even when the test failed: the cluster closes without waiting for a busy thread
            HOLD.set()


@contextmanager
def loop_held(client: Client) -> Iterator[None]:
    """Keep the client's event loop busy: what the client hands it meanwhile (a release) waits till the end."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        done.wait(10)

    loop = client.loop
    assert loop is not None
    loop.add_callback(hold)
    poll_for(holding.is_set, what="the client's loop to be held")
    try:
        yield
    finally:
        done.set()


def function_tasks(client: Client) -> set[str]:
    """The keys of the function's tasks the scheduler holds."""
    return set(
        client.run_on_scheduler(
            lambda dask_scheduler: [
                str(k) for k in dask_scheduler.tasks if str(k).startswith("dask_reservoir-function-")
            ]
        )
    )


def run(client: Client, call: tuple[Any, ...]) -> Any:
    """Run a job's task on the cluster; its result."""
    future = client.submit(*call, key=load_key("job"), pure=False)
    try:
        return future.result(timeout=30)
    finally:
        future.release()


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


def test_a_pandas_job_sends_its_rows_as_columns(client: Client) -> None:
    shipped = FunctionPayload(client, spec(False))
    payload = shipped.future()
    opts = options()
    call = job_call(pandas_source(), [2, 0], ["c", "a"], options=opts, payload=payload, batched=False)
    function, sent_options, sent_payload, rows, uids = call
    assert function is run_rows and sent_options is opts and sent_payload is payload
    assert isinstance(rows, RowColumns)
    assert rows.records() == [{"uid": "c", "v": 3}, {"uid": "a", "v": 1}]
    assert isinstance(uids, Opaque) and uids.value == ["c", "a"]
    outcomes = run(client, call)  # the worker runs the function on those rows
    assert type(outcomes) is ChunkLoaded  # packed as columns on the worker
    assert [(o.uid, o.rows) for o in as_rows(outcomes)] == [
        ("c", [{"uid": "c", "v": 3}]),
        ("a", [{"uid": "a", "v": 1}]),
    ]
    payload.release()


def test_a_batched_pandas_job_sends_one_chunk(client: Client) -> None:
    payload = FunctionPayload(client, spec(False)).future()
    call = job_call(pandas_source(), [1, 2], ["b", "c"], options=options(), payload=payload, batched=True)
    function, _, _, chunk, uids = call
    assert function is run_chunk
    assert isinstance(chunk, Opaque) and chunk.value["v"].tolist() == [2, 3]
    assert uids.value == ["b", "c"]
    loaded = run(client, call)  # the function, called once on the chunk
    assert loaded.uids == ["b", "c"] and loaded.block.columns["v"].tolist() == [2, 3]
    payload.release()


def dask_source(client: Client) -> DaskSource:
    """Rows a, b | c | d: three partitions persisted on the cluster."""
    frame = dd.from_pandas(pd.DataFrame({"uid": ["a", "b", "c", "d"], "v": [1, 2, 3, 4]}), npartitions=3)
    source = make_source(frame, "uid", scheduler=client)
    assert isinstance(source, DaskSource)
    assert source.rows == [(0, 0), (0, 1), (1, 0), (2, 0)] and source.lengths == [2, 1, 1]
    return source


@pytest.mark.parametrize(("batched", "runner"), [(False, run_partition_rows), (True, run_partition_chunk)])
def test_a_dask_job_sends_the_partitions_holding_its_rows(client: Client, batched: bool, runner: Any) -> None:
    source = dask_source(client)
    payload = FunctionPayload(client, spec(False)).future()
    call = job_call(source, [2, 0, 1], ["c", "a", "b"], options=options(), payload=payload, batched=batched)
    function, _, _, parts, refs, uids = call
    assert function is runner
    assert parts == {0: source.parts[0], 1: source.parts[1]}  # not partition 2
    assert refs.value == [(1, 0), (0, 0), (0, 1)]
    assert uids.value == ["c", "a", "b"]
    result = run(client, call)  # the worker reads the rows from those partitions
    if batched:
        assert result.uids == ["c", "a", "b"] and result.block.columns["v"].tolist() == [3, 1, 2]
    else:
        assert type(result) is ChunkLoaded  # packed as columns on the worker
        assert [(o.uid, o.rows[0]["v"]) for o in as_rows(result)] == [("c", 3), ("a", 1), ("b", 2)]
    payload.release()
    source.release()


def test_lost_partitions_are_persisted_again_first(caplog: pytest.LogCaptureFixture) -> None:
    with small_cluster(1) as (cluster, client):
        source = dask_source(client)
        cluster.scale(0)  # the only worker leaves: every partition is lost, none can be computed again
        poll_for(lambda: all(p.status == "lost" for p in source.parts), what="the partitions to be lost")
        source.parts[2].cancel()
        before = list(source.parts)
        assert [p.status for p in before] == ["lost", "lost", "cancelled"]
        payload = FunctionPayload(client, spec(False)).future()
        with caplog.at_level(logging.INFO, logger="dask_reservoir"):
            call = job_call(source, [0, 3], ["a", "d"], options=options(), payload=payload, batched=False)
        assert "partitions [0, 2] of the dask source were lost" in caplog.text
        parts = call[3]
        assert set(parts) == {0, 2}
        for p in (0, 2):  # persisted again, under fresh keys, in one go
            assert parts[p] is source.parts[p] and parts[p].key != before[p].key
            assert parts[p].status not in GONE
        assert parts[0].key[0] == parts[2].key[0]
        assert source.parts[1] is before[1]  # lost too, but not wanted: left alone
        cluster.scale(1)
        client.wait_for_workers(1, timeout=30)
        outcomes = run(client, call)  # the renewed partitions hold the right rows
        assert [(o.uid, o.rows[0]["v"]) for o in as_rows(outcomes)] == [("a", 1), ("d", 4)]
        payload.release()
        source.release()


def test_gone_lists_the_statuses_of_a_result_that_never_comes() -> None:
    assert set(GONE) == {"cancelled", "lost", "error"}


def test_the_function_is_sent_once_and_again_when_gone() -> None:
    """Sent again when its task was cancelled, lost with the only worker holding it, or failed with a dying worker."""
    with small_cluster(1) as (cluster, client):
        shipped = FunctionPayload(client, spec(False))
        first = shipped.future()
        assert shipped.future() is first
        assert str(first.key).startswith("dask_reservoir-function-")
        assert first.result() == shipped.spec.payload
        assert function_tasks(client) == {first.key}
        sent = [first]

        def again(gone: Future, status: str) -> Future:
            """The function's task, asked for once its task ``gone`` reached ``status``."""
            poll_for(lambda: gone.status == status, what=f"the function's task to be {status}")
            future = shipped.future()
            assert future is not gone and future.key not in {f.key for f in sent}
            poll_for(lambda: function_tasks(client) == {future.key}, what="the task gone to be released")
            sent.append(future)
            return future

        first.cancel()
        second = again(first, "cancelled")
        assert second.result() == shipped.spec.payload
        cluster.scale(0)  # the only worker holding its result leaves
        third = again(second, "lost")
        cluster.scale(1)
        assert third.result() == shipped.spec.payload
        # a task that waits behind a busy worker's thread fails when that worker dies (allowed-failures 0)
        blocker = client.submit(busy, key="other-busy", pure=False)
        poll_for(STARTED.is_set, what="the worker to be busy")
        third.cancel()
        fourth = shipped.future()
        (address,) = client.nthreads()
        poll_for(lambda: fourth.key in client.processing()[address], what="the task to wait on the worker")
        worker = next(w for w in cluster.workers.values() if w.address == address)
        cluster.sync(worker.close, executor_wait=False)  # as a crash would
        sent.append(fourth)
        fifth = again(fourth, "error")
        cluster.scale(len(cluster.worker_spec) + 1)  # a new worker
        assert fifth.result() == shipped.spec.payload
        assert len({f.key for f in sent}) == 5
        assert {"cancelled", "lost", "error"} == set(GONE)
        client.cancel([blocker, fifth])


def test_a_function_of_user_code_switches_to_by_value_once(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    shipped = FunctionPayload(client, spec(False))
    assert (shipped.package, shipped.spec.by_value) == ("tests", False)
    by_reference = shipped.future()
    by_reference_payload = by_reference.result()
    assert by_reference_payload == shipped.spec.payload
    with loop_held(client), caplog.at_level(logging.INFO, logger="dask_reservoir"):
        shipped.to_by_value("worker(s) ['tcp://w'] cannot import 'tests'")
        by_value = shipped.future()  # asked at once, as the runner does: the release is not handled yet
    assert by_value is not by_reference
    assert shipped.spec.by_value
    poll_for(
        lambda: by_reference.key not in function_tasks(client), what="the by-reference task to be released"
    )
    assert "worker(s) ['tcp://w'] cannot import 'tests'; function_to_run now travels by value" in caplog.text
    shipped_payload = by_value.result()
    assert shipped_payload == shipped.spec.payload and shipped_payload != by_reference_payload
    assert load_function(shipped_payload)({"x": 1}) == {"x": 1}
    caplog.clear()
    shipped.to_by_value("again")
    assert caplog.text == ""  # already by value: nothing changes
    assert shipped.future() is by_value
    client.submit(time.monotonic, pure=False).result()  # after what this client sent before
    assert by_value.key in function_tasks(client)  # not released
    assert repr(shipped) == "<FunctionPayload: package='tests' by_value=True task=finished>"
    shipped.detach()
    by_value.release()


def test_detach_hands_over_the_functions_task(client: Client) -> None:
    shipped = FunctionPayload(client, spec(True))
    assert shipped.detach() is None
    future = shipped.future()
    future.result()
    assert shipped.detach() is future
    assert shipped.detach() is None
    again = shipped.future()  # sent again when asked again
    assert again is not future and again.key != future.key
    again.result()  # after what this client sent before
    assert function_tasks(client) == {future.key, again.key}  # the detached task is not released
    client.cancel([future, again])
