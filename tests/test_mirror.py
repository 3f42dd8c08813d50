"""The consumer's copy of a loader process's ledger (pure: no process, no cluster)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dask_reservoir._core.records import Completed, RunnerCounters
from dask_reservoir._runtime.loader.mirror import LedgerMirror, LoaderState
from dask_reservoir.errors import JobError


def counters(**kw: Any) -> RunnerCounters:
    base = dict.fromkeys(
        (
            "jobs_submitted",
            "rows_submitted",
            "rows_loaded",
            "rows_requeued",
            "jobs_completed",
            "jobs_failed",
            "rows_failed",
            "jobs_in_flight",
            "rows_in_flight",
            "entries_waiting",
            "uids_tried",
            "uids_loaded",
        ),
        0,
    )
    return RunnerCounters(**{**base, **kw})


def entry(uid: Any) -> Completed:
    return Completed(uid, 0, ({"x": uid},), 0.1, 1.0)


def make() -> tuple[LedgerMirror, list[tuple[Any, ...]], list[tuple[str, Any]]]:
    sent: list[tuple[Any, ...]] = []
    asked: list[tuple[str, Any]] = []

    def ask(kind: str, payload: Any) -> Any:
        asked.append((kind, payload))
        return ["q"]

    return LedgerMirror(sent.append, ask), sent, asked


def test_take_hands_out_oldest_first_and_acknowledges_exactly_what_it_took() -> None:
    mirror, sent, _ = make()
    mirror.receive([entry("a"), entry("b"), entry("c")], [], LoaderState())
    assert [c.uid for c in mirror.take(2)] == ["a", "b"]
    assert sent == [("taken", ["a", "b"])]
    assert mirror.take(0) == [] and sent == [("taken", ["a", "b"])]  # nothing taken, nothing said
    assert [c.uid for c in mirror.take()] == ["c"]
    assert sent[-1] == ("taken", ["c"])


def test_counters_add_what_waits_here_to_what_waits_in_the_loader() -> None:
    mirror, _, _ = make()
    assert mirror.counters().status == "connecting"  # nothing heard yet
    state = LoaderState(counters=counters(entries_waiting=3, rows_loaded=7), rows_per_job=4, max_rows=16)
    mirror.receive([entry("a"), entry("b")], [], state)
    c = mirror.counters()
    assert (c.entries_waiting, c.rows_loaded, c.status) == (5, 7, "running")
    assert (mirror.rows_per_job, mirror.max_rows) == (4, 16)
    mirror.take()
    assert mirror.counters().entries_waiting == 3
    assert mirror.has_waiting()  # three wait in the loader
    mirror.receive([], [], LoaderState(counters=counters()))
    assert not mirror.has_waiting()


def test_errors_are_popped_in_order_and_stop_is_reported() -> None:
    mirror, _, _ = make()
    first, second = JobError("one", uid=1), JobError("two", uid=2)
    mirror.receive([], [first, second], LoaderState())
    assert mirror.pop_error() is first and mirror.pop_error() is second and mirror.pop_error() is None
    boom = RuntimeError("the loader died")
    mirror.stopped(boom, "lost")
    mirror.stopped(RuntimeError("later"), "lost")  # the first cause stays
    assert mirror.fatal is boom and mirror.status == "lost"


def test_wait_wakes_when_entries_arrive() -> None:
    mirror, _, _ = make()
    woke = threading.Event()

    def waiter() -> None:
        mirror.wait(30)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert not woke.wait(0.05)
    mirror.receive([entry("a")], [], LoaderState())
    assert woke.wait(10)
    t.join(10)


def test_rejected_and_release_go_to_the_loader() -> None:
    mirror, sent, asked = make()
    mirror.rejected("u", ValueError("does not fit"), 7)
    mirror.rejected("v", ValueError("no"))
    assert sent == [
        ("rejected", "u", "ValueError: does not fit", 7),
        ("rejected", "v", "ValueError: no", None),
    ]
    assert mirror.release_quarantine(("q", "r")) == ["q"]
    assert mirror.release_quarantine() == ["q"]
    assert asked == [("release", ["q", "r"]), ("release", None)]


def test_closed_mirror_drops_what_waits_and_ignores_late_shipments() -> None:
    mirror, _, _ = make()
    mirror.receive([entry("a")], [], LoaderState())
    mirror.close()
    mirror.receive([entry("b")], [], LoaderState())
    assert mirror.take() == [] and mirror.status == "closed"


@pytest.mark.parametrize("limit", [None, 1, 5])
def test_take_limit(limit: int | None) -> None:
    mirror, _, _ = make()
    mirror.receive([entry(i) for i in range(3)], [], LoaderState())
    assert len(mirror.take(limit)) == (3 if limit is None else min(limit, 3))


@pytest.mark.parametrize("what", ["entries", "errors", "fatal", "closed"])
def test_wait_returns_at_once_when_there_is_something_to_see(what: str) -> None:
    mirror, _, _ = make()
    if what == "entries":
        mirror.receive([entry("a")], [], LoaderState())
    elif what == "errors":
        mirror.receive([], [JobError("boom", uid=1)], LoaderState())
    elif what == "fatal":
        mirror.stopped(RuntimeError("gone"), "lost")
    else:
        mirror.close()
    waiter = threading.Thread(target=mirror.wait, args=(600,))
    waiter.start()
    waiter.join(30)  # a deadline, not a speed: without the early return it would block 600 s
    assert not waiter.is_alive()


def test_source_position_is_asked_from_the_loader() -> None:
    asked: list[tuple[str, Any]] = []

    def ask(kind: str, payload: Any) -> Any:
        asked.append((kind, payload))
        return [3, 7, ["u", "v"]]

    mirror = LedgerMirror(lambda message: None, ask)
    assert mirror.source_position() == (3, 7, ("u", "v")) and asked == [("position", None)]
    assert mirror.recent_load_seconds() == [] and mirror.mean_load_seconds == 0.0
    state = LoaderState(recent_load_seconds=(0.5, 0.25), mean_load_seconds=0.375)
    mirror.receive([], [], state)
    assert mirror.recent_load_seconds() == [0.5, 0.25] and mirror.mean_load_seconds == 0.375
    assert mirror.state is state


def test_one_entry_waiting_in_the_loader_is_waiting() -> None:
    mirror, _, _ = make()
    mirror.receive([], [], LoaderState(counters=counters(entries_waiting=1)))
    assert mirror.has_waiting() and mirror.counters().entries_waiting == 1
