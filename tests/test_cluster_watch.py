"""The runner's watch over a real cluster: workers that join and leave, dask's re-runs, the connection, the close checks.

Every test runs against real schedulers and workers: the module's threaded ``LocalCluster``, or a
small one the test owns when it adds, closes or loses workers, or loses its scheduler.  A worker
leaves "as a crash would" when it is closed without being retired first: the scheduler then
forgets the results only it held and runs its tasks again (its ``remove-worker`` event names them).
"""

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
from distributed import Client, LocalCluster, secede

from dask_reservoir import SequentialSampler
from dask_reservoir._core.ledger import Ledger, default_bound
from dask_reservoir._runtime import cluster_watch
from dask_reservoir._runtime.cluster_watch import CLUSTER_CHECK_SECONDS, ClusterWatch
from dask_reservoir._runtime.jobs import load_key
from dask_reservoir._source.dask_source import persist_partitions
from dask_reservoir.errors import ClusterLostError
from tests.utils import poll_for

PERIOD = CLUSTER_CHECK_SECONDS

# Threaded clusters run their tasks in this process: these hold tasks until a test lets them go.
HOLD = threading.Event()
HOLD_OTHER = threading.Event()
GATES = {"hold": HOLD, "other": HOLD_OTHER}
STARTED: set[str] = set()


def held(name: str, *, gate: str = "hold", long_running: bool = False) -> str:
    """A task that runs until its gate is set (at most 30 s); a dask long-running task if ``long_running``."""
    if long_running:
        secede()  # leaves the worker's thread pool
    STARTED.add(name)
    GATES[gate].wait(30)
    return name


def after(value: Any) -> Any:
    """A task that depends on ``value`` and runs until HOLD: the scheduler keeps ``value`` meanwhile."""
    HOLD.wait(30)
    return value


def value(v: int) -> int:
    return v


@pytest.fixture(autouse=True)
def _held_tasks_end() -> Iterator[None]:
    HOLD.clear()
    HOLD_OTHER.clear()
    STARTED.clear()
    yield
    HOLD.set()  # nothing stays held after a test
    HOLD_OTHER.set()


def ledger() -> Ledger:
    return Ledger([f"u{i}" for i in range(10)], SequentialSampler(), max_rows=None, rows_per_job=1)


@contextmanager
def small_cluster(
    workers: int, *, threads: int = 1, tcp: bool = False
) -> Iterator[tuple[LocalCluster, Client]]:
    """A threaded LocalCluster the test owns (over TCP if ``tcp``), and a client of it."""
    network = {"protocol": "tcp", "host": "127.0.0.1"} if tcp else {}
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
            **network,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        try:
            yield cluster, client
        finally:  # even when the test failed: the cluster closes without waiting for held tasks
            HOLD.set()
            HOLD_OTHER.set()


def scale(cluster: LocalCluster, client: Client, workers: int) -> list[str]:
    """Scale to ``workers`` workers; the addresses of those that joined."""
    before = set(client.nthreads())
    cluster.scale(workers)
    client.wait_for_workers(workers, timeout=30)
    return sorted(set(client.nthreads()) - before)


def crash(cluster: LocalCluster, client: Client, address: str) -> None:
    """Close the worker at ``address`` without retiring it, as a crash would; wait until the scheduler forgot it.

    Its thread may still run a held task: that runs on, unseen, until HOLD.
    """
    worker = next(w for w in cluster.workers.values() if w.address == address)
    cluster.sync(worker.close, executor_wait=False)
    poll_for(lambda: address not in client.nthreads(), what=f"the scheduler to remove {address}")


def removal(client: Client, address: str) -> dict[str, Any]:
    """The scheduler's ``remove-worker`` event of the worker at ``address``."""
    return next(
        e for _, e in client.get_events(address) if isinstance(e, dict) and e.get("action") == "remove-worker"
    )


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# ---------------------------------------------------------------- workers that join
def test_check_reads_the_workers_once_per_period_and_returns_those_that_joined() -> None:
    with small_cluster(2) as (cluster, client):
        book = ledger()
        watch = ClusterWatch(client, book)
        first = sorted(client.nthreads())
        assert watch.check(now=10.0) == first
        assert watch.workers == frozenset(first)
        assert book.counters().workers == 2 and book.counters().workers_lost == 0
        third = scale(cluster, client, 3)
        assert watch.check(now=10.0 + PERIOD - 0.01) == []  # not time yet: not read
        assert watch.workers == frozenset(first)
        assert watch.check(now=10.0 + PERIOD) == third
        assert book.counters().workers == 3
        assert watch.check(now=20.0) == []  # the same workers: none joined


def test_the_bound_follows_the_worker_threads() -> None:
    with small_cluster(1, threads=3) as (cluster, client):
        book = Ledger(list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=1)
        watch = ClusterWatch(client, book)
        watch.check(now=0.0)
        one_worker = book.max_rows
        scale(cluster, client, 2)  # 6 threads in all
        watch.check(now=PERIOD)
        assert book.max_rows > one_worker
        assert book.max_rows == default_bound(1, 6, None)


def test_with_no_worker_it_reads_again_after_the_empty_recheck() -> None:
    with small_cluster(0) as (cluster, client):
        watch = ClusterWatch(client, ledger(), empty_recheck=0.25)
        assert watch.check(now=0.0) == []
        first = scale(cluster, client, 1)
        assert watch.check(now=0.2) == []  # not yet
        assert watch.check(now=0.25) == first
        # with a worker, the period is the full one again
        second = scale(cluster, client, 2)
        assert watch.check(now=0.5) == []
        assert watch.check(now=0.25 + PERIOD) == second


def test_a_scheduler_that_does_not_answer_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A client that can no longer ask its scheduler (closed): nothing changes, asked again a period later."""
    with small_cluster(1) as (_, client):
        book = ledger()
        watch = ClusterWatch(client, book)
        only = watch.check(now=0.0)
        bound = book.max_rows
        client.close()
        with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
            assert watch.check(now=5.0) == []
            assert len(messages(caplog, "could not ask the scheduler for its workers")) == 1
            assert watch.workers == frozenset(only)
            assert book.counters().workers == 1 and book.counters().workers_lost == 0
            assert book.max_rows == bound
            caplog.clear()
            assert watch.check(now=5.5) == []  # asked again a period later, not sooner
            assert messages(caplog, "could not ask the scheduler") == []
            assert watch.check(now=5.0 + PERIOD) == []
            assert len(messages(caplog, "could not ask the scheduler for its workers")) == 1


# ---------------------------------------------------------------- workers that leave
def test_a_departed_worker_counts_the_rows_dask_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    with small_cluster(2) as (cluster, client):
        victim, survivor = sorted(client.nthreads())
        book = ledger()
        watch = ClusterWatch(client, book)
        watch.check(now=0.0)
        k1, k2, k3 = (load_key(f"k{i}") for i in (1, 2, 3))
        on_victim = {"workers": [victim], "allow_other_workers": True, "pure": False}
        f3 = client.submit(value, 3, key=k3, **on_victim)  # its result only on the victim
        f2 = client.submit(value, 2, key=k2, workers=[survivor], allow_other_workers=True, pure=False)
        assert (f3.result(), f2.result()) == (3, 2)
        f1 = client.submit(held, "k1", key=k1, **on_victim)  # running on the victim
        other = client.submit(held, "other", key="someone-else-1", **on_victim)
        watch.submitted(k1, 3)
        watch.submitted(k2, 2)
        watch.submitted(k3, 5)
        poll_for(
            lambda: {k1, "someone-else-1"} <= set(client.processing()[victim]), what="tasks on the victim"
        )
        client.log_event(victim, "a text event")  # events of other shapes are skipped
        # a worker that stays: its events are not read (one naming k2 would count it)
        client.log_event(survivor, {"action": "remove-worker", "processing-tasks": [k2]})
        crash(cluster, client, victim)
        event = removal(client, victim)  # what the scheduler saw: k1 ran there, k3 was held only there
        assert {k1, "someone-else-1"} <= set(event["processing-tasks"])
        assert k3 in event["lost-computed-tasks"] and k2 not in event["lost-computed-tasks"]
        with caplog.at_level(logging.INFO, logger="dask_reservoir"):
            assert watch.check(now=PERIOD) == []
        c = book.counters()
        assert (c.workers, c.workers_lost, c.rows_rerun) == (1, 1, 3 + 5)
        record = next(r for r in caplog.records if "left the cluster" in r.getMessage())
        assert record.levelno == logging.WARNING
        assert record.getMessage() == (
            f"dask_reservoir: 1 worker(s) left the cluster ({victim}); dask runs 8 of our rows again; "
            "1 worker(s) now"
        )
        HOLD.set()  # dask ran them again on the survivor
        assert (f1.result(), other.result(), f3.result()) == ("k1", "other", 3)
        client.cancel([f1, f2, f3, other])


def test_a_departure_without_rows_of_ours_is_only_noted(caplog: pytest.LogCaptureFixture) -> None:
    with small_cluster(2, tcp=True) as (cluster, client):
        a, b = sorted(client.nthreads())
        book = ledger()
        watch = ClusterWatch(client, book)
        watch.check(now=0.0)
        theirs = client.submit(value, 1, key="someone-else-1", workers=[a], pure=False)
        theirs.result()

        def unsendable(address: str, dask_scheduler: Any = None) -> None:
            dask_scheduler.log_event(address, {"action": "note", "lock": threading.Lock()})

        # the scheduler cannot send b's events (one does not pickle): skipped, a's still read
        client.run_on_scheduler(unsendable, b)
        cluster.scale(0)
        poll_for(lambda: not client.nthreads(), what="both workers to leave")
        assert "someone-else-1" in removal(client, a)["lost-computed-tasks"]
        with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
            watch.check(now=PERIOD)
        c = book.counters()
        assert (c.workers, c.workers_lost, c.rows_rerun) == (0, 2, 0)
        assert len(messages(caplog, f"could not read the scheduler's events of {b}")) == 1
        record = next(r for r in caplog.records if "left the cluster" in r.getMessage())
        assert record.levelno == logging.INFO
        assert (
            f"2 worker(s) left the cluster ({a}, {b}); dask runs 0 of our rows again; 0 worker(s) now"
            in record.getMessage()
        )
        client.cancel(theirs)


def test_only_the_last_recent_keys_tasks_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_watch, "RECENT_KEYS", 2)
    with small_cluster(2) as (cluster, client):
        victim = sorted(client.nthreads())[0]
        book = ledger()
        watch = ClusterWatch(client, book)
        watch.check(now=0.0)
        futures = []
        for name, rows in (("k1", 1), ("k2", 10), ("k3", 100)):
            key = load_key(name)
            futures.append(client.submit(value, rows, key=key, workers=[victim], allow_other_workers=True))
            watch.submitted(key, rows)
        client.gather(futures)
        assert repr(watch) == "<ClusterWatch: workers=2 recent_tasks=2>"
        crash(cluster, client, victim)
        assert {f.key for f in futures} <= set(removal(client, victim)["lost-computed-tasks"])
        watch.check(now=PERIOD)
        assert book.counters().rows_rerun == 110  # k1, the oldest, was forgotten
        client.cancel(futures)


# ---------------------------------------------------------------- the connection
@contextmanager
def tcp_scheduler(port: int = 0) -> Iterator[str]:
    """A scheduler (no worker) on 127.0.0.1, at ``port`` if given; its address."""
    with LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        scheduler_port=port,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as cluster:
        yield cluster.scheduler_address


def test_connected_follows_the_client_status() -> None:
    """The scheduler goes away (the client reconnects), then one answers at its address again."""
    book = ledger()
    with tcp_scheduler() as address:
        client = Client(address, set_as_default=False, timeout=60)  # tries to reconnect for 60 s
        watch = ClusterWatch(client, book)
        assert watch.connected() and book.status == "running"
    try:
        poll_for(lambda: client.status == "connecting", what="the client to reconnect")
        assert not watch.connected()
        assert book.status == "connecting"
        with tcp_scheduler(port=int(address.rsplit(":", 1)[1])):
            poll_for(lambda: client.status == "running", timeout=30, what="the client to be back")
            assert watch.connected() and book.status == "running"
            client.close()
    finally:
        client.close()


def test_connected_leaves_a_status_other_than_connecting_alone(client: Client) -> None:
    book = ledger()
    book.set_status("lost")
    watch = ClusterWatch(client, book)
    assert watch.connected()
    assert book.status == "lost"


AT_CLOSE: list[BaseException] = []


def ask_at_close(client: Client) -> None:
    """A client preload's teardown: runs while the client is closing, its scheduler still known."""
    try:
        ClusterWatch(client, ledger()).connected()
    except ClusterLostError as exc:
        AT_CLOSE.append(exc)


def test_a_closing_client_is_a_lost_cluster() -> None:
    AT_CLOSE.clear()
    preload = f"from {__name__} import ask_at_close as dask_teardown"
    with tcp_scheduler() as address, dask.config.set({"distributed.client.preload": [preload]}):
        Client(address, set_as_default=False).close()
    assert len(AT_CLOSE) == 1
    assert str(AT_CLOSE[0]) == (
        f"lost the dask scheduler at '{address}': the client is 'closing' and will not reconnect"
    )


def test_a_client_that_gave_up_reconnecting_is_a_lost_cluster() -> None:
    """Once the client gave up, it no longer knows its scheduler's address: the message says so."""
    with tcp_scheduler() as address:
        client = Client(address, set_as_default=False, timeout=1)  # gives up after 1 s
        watch = ClusterWatch(client, ledger())
    try:
        poll_for(lambda: client.status == "closed", timeout=30, what="the client to give up")
        with pytest.raises(ClusterLostError, match=r"lost the dask scheduler at '': the client is 'closed'"):
            watch.connected()
    finally:
        client.close()


# ---------------------------------------------------------------- at close
def our_tasks(client: Client) -> list[Any]:
    """The keys the scheduler holds that start with dask_reservoir- (tuples included)."""
    return list(
        client.run_on_scheduler(
            lambda dask_scheduler: [
                k
                for k in dask_scheduler.tasks
                if str(k[0] if isinstance(k, tuple) else k).startswith("dask_reservoir-")
            ]
        )
    )


def test_wait_released_until_the_scheduler_holds_none_of_our_tasks(client: Client) -> None:
    """Our task is held while a task of another key depends on it; other keys and persisted partitions are not waited for."""
    watch = ClusterWatch(client, ledger())
    ours = client.submit(value, 1, key=load_key("x"), pure=False)
    needs_it = client.submit(after, ours, key="other-y", pure=False)
    unrelated = client.submit(value, 2, key="other-z", pure=False)  # held throughout
    assert (ours.result(), unrelated.result()) == (1, 2)
    ours.release()  # the scheduler keeps it for needs_it, as long as needs_it is held
    frame = dd.from_pandas(pd.DataFrame({"v": range(4)}), npartitions=2)
    parts = persist_partitions(frame, client)  # keys ("dask_reservoir-part-...", i), held throughout
    assert all(isinstance(p.key, tuple) and str(p.key[0]).startswith("dask_reservoir-part-") for p in parts)
    start = time.monotonic()
    assert not watch.wait_released(0.1)  # gives up at the timeout
    assert time.monotonic() - start >= 0.1
    assert ours.key in our_tasks(client)
    HOLD.set()
    assert needs_it.result() == 1
    needs_it.release()  # travels to the scheduler asynchronously
    assert watch.wait_released(10.0)
    assert {str(k) for k in our_tasks(client)} == {str(p.key) for p in parts}  # only the partitions
    client.cancel([unrelated, *parts])


def test_wait_released_without_a_running_client_is_done(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    ours = client.submit(value, 1, key=load_key("x"), pure=False)
    ours.result()
    other = Client(client.scheduler.address, set_as_default=False)  # type: ignore[union-attr]
    other.close()
    with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
        assert ClusterWatch(other, ledger()).wait_released(30.0)
    assert messages(caplog, "could not ask") == []  # it knew, without asking, that no scheduler is left
    assert ours.key in our_tasks(client)  # not waited for: that client has no scheduler to ask
    client.cancel(ours)


def test_wait_executions_end_waits_for_the_cancelled_tasks_still_running(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled tasks run on in their threads (a long-running one too); only ``keys`` are waited for."""
    first, second = sorted(client.nthreads())
    running = client.submit(held, "running", key=load_key("running"), workers=[first], pure=False)
    seceded = client.submit(
        held, "seceded", long_running=True, key=load_key("seceded"), workers=[second], pure=False
    )
    poll_for(lambda: {"running", "seceded"} <= STARTED, what="both tasks to run")
    not_waited = client.submit(
        held, "other", gate="other", key=load_key("other"), workers=[second], pure=False
    )
    poll_for(lambda: "other" in STARTED, what="the third task to run")
    client.cancel([running, seceded])
    keys = {str(running.key), str(seceded.key), load_key("never-submitted")}
    watch = ClusterWatch(client, ledger())
    with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
        start = time.monotonic()
        watch.wait_executions_end(keys, timeout=0.2)  # both still run: left to the workers at the deadline
        assert time.monotonic() - start >= 0.2
        assert len(messages(caplog, "2 cancelled tasks still run on the workers at close")) == 1
        caplog.clear()
        HOLD.set()
        watch.wait_executions_end(keys, timeout=10.0)  # returns once they ended
        assert messages(caplog, "still run on the workers") == []
    assert "other" in STARTED and not_waited.status == "pending"  # still running: not among the keys
    HOLD_OTHER.set()
    assert not_waited.result() == "other"
    client.cancel(not_waited)
