"""The runner's watch over the cluster, against a fake client: workers, re-runs, connection, close checks."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from dask_reservoir import SequentialSampler
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._runtime import cluster_watch
from dask_reservoir._runtime.cluster_watch import CLUSTER_CHECK_SECONDS, ClusterWatch
from dask_reservoir.errors import ClusterLostError


class FakeClient:
    """Answers as a client of a scheduler whose workers and events the test sets."""

    def __init__(self, nthreads: dict[str, int] | None = None) -> None:
        self.status = "running"
        self.nthreads_now: dict[str, int] | Exception = dict(nthreads or {})
        self.events: dict[str, list[tuple[float, Any]] | Exception] = {}
        self.asked_events: list[str] = []
        self.scheduler_tasks: list[int] = []  # answers of run_on_scheduler, in turn (the last repeats)
        self.executing: list[int] = []  # answers of run, in turn (the last repeats)
        self.run_calls = 0

    def nthreads(self) -> dict[str, int]:
        if isinstance(self.nthreads_now, Exception):
            raise self.nthreads_now
        return self.nthreads_now

    def get_events(self, address: str) -> list[tuple[float, Any]]:
        self.asked_events.append(address)
        events = self.events.get(address, [])
        if isinstance(events, Exception):
            raise events
        return events

    def run_on_scheduler(self, function: Any, prefix: str) -> int:
        assert prefix == "dask_reservoir-"
        return self.scheduler_tasks.pop(0) if len(self.scheduler_tasks) > 1 else self.scheduler_tasks[0]

    def run(self, function: Any, keys: set[str], *, callback_timeout: float) -> dict[str, int]:
        self.run_calls += 1
        assert callback_timeout > 0
        running = self.executing.pop(0) if len(self.executing) > 1 else self.executing[0]
        return {"tcp://w1": running}


def ledger() -> Ledger:
    return Ledger([f"u{i}" for i in range(10)], SequentialSampler(), max_rows=None, rows_per_job=1)


def removed(*keys: str, lost: tuple[str, ...] = ()) -> tuple[float, dict[str, Any]]:
    return (
        0.0,
        {"action": "remove-worker", "processing-tasks": list(keys), "lost-computed-tasks": list(lost)},
    )


def test_check_reads_the_workers_once_per_period_and_returns_those_that_joined() -> None:
    client = FakeClient({"tcp://b": 2, "tcp://a": 1})
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    assert watch.check(now=10.0) == ["tcp://a", "tcp://b"]
    assert watch.workers == frozenset({"tcp://a", "tcp://b"})
    assert book.counters().workers == 2 and book.counters().workers_lost == 0
    client.nthreads_now = {"tcp://a": 1, "tcp://b": 2, "tcp://c": 4}
    assert watch.check(now=10.0 + CLUSTER_CHECK_SECONDS - 0.01) == []  # not time yet: not read
    assert watch.workers == frozenset({"tcp://a", "tcp://b"})
    assert watch.check(now=10.0 + CLUSTER_CHECK_SECONDS) == ["tcp://c"]
    assert book.counters().workers == 3
    assert watch.check(now=20.0) == []  # the same workers: none joined


def test_the_bound_follows_the_worker_threads() -> None:
    client = FakeClient({"tcp://a": 1})
    book = Ledger(list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=1)
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    watch.check(now=0.0)
    one_thread = book.max_rows
    client.nthreads_now = {"tcp://a": 1, "tcp://b": 15}  # 16 threads in all
    watch.check(now=CLUSTER_CHECK_SECONDS)
    assert book.max_rows > one_thread


def test_with_no_worker_it_reads_again_after_the_empty_recheck() -> None:
    client = FakeClient({})
    watch = ClusterWatch(client, ledger(), empty_recheck=0.25)  # type: ignore[arg-type]
    assert watch.check(now=0.0) == []
    client.nthreads_now = {"tcp://a": 1}
    assert watch.check(now=0.2) == []  # not yet
    assert watch.check(now=0.25) == ["tcp://a"]
    # with a worker, the period is the full one again
    client.nthreads_now = {"tcp://a": 1, "tcp://b": 1}
    assert watch.check(now=0.5) == []
    assert watch.check(now=0.25 + CLUSTER_CHECK_SECONDS) == ["tcp://b"]


def test_a_scheduler_that_does_not_answer_changes_nothing() -> None:
    client = FakeClient({"tcp://a": 1})
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    watch.check(now=0.0)
    client.nthreads_now = OSError("no answer")
    assert watch.check(now=5.0) == []
    assert watch.workers == frozenset({"tcp://a"})
    assert book.counters().workers == 1 and book.counters().workers_lost == 0
    client.nthreads_now = {"tcp://a": 1}
    assert watch.check(now=5.5) == []  # read again a period later, not sooner
    client.nthreads_now = {"tcp://a": 1, "tcp://b": 1}
    assert watch.check(now=6.0) == ["tcp://b"]


def test_a_departed_worker_counts_the_rows_dask_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient({"tcp://a": 1, "tcp://b": 1})
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    watch.check(now=0.0)
    watch.submitted("k1", 3)
    watch.submitted("k2", 2)
    watch.submitted("k3", 5)
    client.nthreads_now = {"tcp://b": 1}
    client.events["tcp://a"] = [
        (0.0, {"action": "add-worker"}),
        removed("k1", "not-ours", lost=("k3",)),
        (0.0, "a text event"),
    ]
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        assert watch.check(now=CLUSTER_CHECK_SECONDS) == []
    c = book.counters()
    assert (c.workers, c.workers_lost, c.rows_rerun) == (1, 1, 3 + 5)
    assert client.asked_events == ["tcp://a"]
    record = next(r for r in caplog.records if "left the cluster" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "dask_reservoir: 1 worker(s) left the cluster (tcp://a); dask runs 8 of our rows again; 1 worker(s) now"
    )


def test_a_departure_without_rows_of_ours_is_only_noted(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient({"tcp://a": 1, "tcp://b": 1})
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    watch.check(now=0.0)
    client.nthreads_now = {}
    client.events["tcp://a"] = [removed("someone-else")]
    client.events["tcp://b"] = OSError("no events")  # skipped, the others still read
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        watch.check(now=CLUSTER_CHECK_SECONDS)
    c = book.counters()
    assert (c.workers, c.workers_lost, c.rows_rerun) == (0, 2, 0)
    record = next(r for r in caplog.records if "left the cluster" in r.getMessage())
    assert record.levelno == logging.INFO
    assert (
        "2 worker(s) left the cluster (tcp://a, tcp://b); dask runs 0 of our rows again"
        in record.getMessage()
    )


def test_only_the_last_recent_keys_tasks_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_watch, "RECENT_KEYS", 2)
    client = FakeClient({"tcp://a": 1})
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    watch.check(now=0.0)
    for key, rows in (("k1", 1), ("k2", 10), ("k3", 100)):
        watch.submitted(key, rows)
    assert repr(watch) == "<ClusterWatch: workers=1 recent_tasks=2>"
    client.nthreads_now = {}
    client.events["tcp://a"] = [removed("k1", "k2", "k3")]
    watch.check(now=CLUSTER_CHECK_SECONDS)
    assert book.counters().rows_rerun == 110  # k1, the oldest, was forgotten


def test_connected_follows_the_client_status() -> None:
    client = FakeClient()
    book = ledger()
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    assert watch.connected() and book.status == "running"
    client.status = "connecting"
    assert not watch.connected()
    assert book.status == "connecting"
    client.status = "running"
    assert watch.connected() and book.status == "running"


def test_connected_leaves_a_status_other_than_connecting_alone() -> None:
    client = FakeClient()
    book = ledger()
    book.set_status("lost")
    watch = ClusterWatch(client, book)  # type: ignore[arg-type]
    assert watch.connected()
    assert book.status == "lost"


@pytest.mark.parametrize("status", ["closed", "closing", "failed"])
def test_a_client_that_gave_up_is_a_lost_cluster(status: str) -> None:
    class Scheduler:
        address = "tcp://10.0.0.1:8786"

    client = FakeClient()
    client.status = status
    client.scheduler = Scheduler()  # type: ignore[attr-defined]
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    with pytest.raises(ClusterLostError, match=rf"at 'tcp://10.0.0.1:8786': the client is '{status}'"):
        watch.connected()


def test_a_lost_cluster_without_an_address_says_so() -> None:
    client = FakeClient()
    client.status = "closed"
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    with pytest.raises(ClusterLostError, match=r"lost the dask scheduler at '': the client is 'closed'"):
        watch.connected()


def test_wait_released_until_the_scheduler_holds_none_of_our_tasks() -> None:
    client = FakeClient()
    client.scheduler_tasks = [3, 1, 0]
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    assert watch.wait_released(5.0)
    assert client.scheduler_tasks == [0]


def test_wait_released_gives_up_at_the_timeout() -> None:
    client = FakeClient()
    client.scheduler_tasks = [1]
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    start = time.monotonic()
    assert not watch.wait_released(0.1)
    assert 0.1 <= time.monotonic() - start < 2.0


def test_wait_released_without_a_running_client_is_done() -> None:
    client = FakeClient()
    client.status = "closed"
    client.scheduler_tasks = [5]
    assert ClusterWatch(client, ledger()).wait_released(5.0)  # type: ignore[arg-type]


def test_wait_executions_end_returns_once_no_worker_runs_them() -> None:
    client = FakeClient()
    client.executing = [2, 1, 0]
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    watch.wait_executions_end({"k1", "k2"}, timeout=5.0)
    assert client.run_calls == 3


def test_wait_executions_end_leaves_them_at_the_deadline() -> None:
    client = FakeClient()
    client.executing = [1]
    watch = ClusterWatch(client, ledger())  # type: ignore[arg-type]
    start = time.monotonic()
    watch.wait_executions_end({"k1"}, timeout=0.1)
    assert 0.1 <= time.monotonic() - start < 2.0
    assert client.run_calls >= 2


def test_executing_counts_the_keys_a_worker_runs() -> None:
    class Task:
        def __init__(self, key: str) -> None:
            self.key = key

    class State:
        def __init__(self) -> None:
            self.executing = [Task("a"), Task("x")]
            self.long_running = [Task("b")]

    class Worker:
        state = State()

    assert cluster_watch._executing({"a", "b", "c"}, dask_worker=Worker()) == 2
    assert cluster_watch._executing({"a"}, dask_worker=object()) == 0


def test_tasks_with_prefix_counts_the_schedulers_keys() -> None:
    class Scheduler:
        def __init__(self) -> None:
            self.tasks = {"dask_reservoir-load-1": 0, ("dask_reservoir-x", 0): 0, "other": 0}

    assert cluster_watch._tasks_with_prefix("dask_reservoir-", dask_scheduler=Scheduler()) == 1
