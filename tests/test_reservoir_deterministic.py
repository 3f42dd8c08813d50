"""deterministic=True: epoch k is a function of the seeds and k, whatever the workers and timing."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, JobError, RandomSampler, SequentialSampler
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._core.records import RowLoaded
from tests import utils
from tests.utils import frame, gated_load, threaded_cluster


def jittery(row: dict[str, Any]) -> dict[str, Any]:
    """Deterministic output, random timing: results finish out of submission order."""
    time.sleep(random.random() * 0.004)
    v = int(row["value"])
    return {"x": np.full(3, v * 10, dtype=np.int64), "label": v % 5}


def make(client: Client, **kw: Any) -> AsyncReservoir:
    return AsyncReservoir(
        frame(30),
        jittery,
        20,
        min_reservoir_samples=10,
        client=client,
        batch_size=4,
        reservoir_sampler=RandomSampler(seed=5),
        source_sampler=RandomSampler(seed=9),
        max_reservoir_replacement_size=3,
        deterministic=True,
        **kw,
    )


def epochs(r: AsyncReservoir, n: int) -> list[list[tuple[int, ...]]]:
    out = []
    for _ in range(n):
        batches = []
        for b in r:
            assert np.array_equal(b["x"][:, 0], b["sample_uid"] * 10)
            batches.append(tuple(int(u) for u in b["sample_uid"]))
        out.append(batches)
    return out


def test_one_worker_and_four_give_the_same_batches_for_50_epochs() -> None:
    with threaded_cluster(1) as c1, make(c1) as r1:
        one = epochs(r1, 50)
    with threaded_cluster(4) as c4, make(c4) as r4:
        four = epochs(r4, 50)
    assert one == four
    assert len({tuple(e) for e in one}) > 40  # the epochs do differ from each other
    first = {u for b in one[0] for u in b}
    later = {u for b in one[-1] for u in b}
    assert len(first) == 10 and len(later) == 20 and later != first  # it fills, then replaces 3 per epoch


def test_a_resumed_deterministic_run_goes_on_identically() -> None:
    with threaded_cluster(2) as client:
        with make(client) as r:
            whole = epochs(r, 40)
        with make(client) as r:
            head = epochs(r, 15)
            state = r.state_dict()
        with make(client) as r:
            r.load_state_dict(state)
            tail = epochs(r, 25)
    assert head == whole[:15] and tail == whole[15:]


def test_deterministic_needs_a_replacement_cap(client: Client) -> None:
    with pytest.raises(ValueError, match=r"deterministic=True needs max_reservoir_replacement_size"):
        AsyncReservoir(frame(4), jittery, 4, client=client, deterministic=True)
    with pytest.raises(TypeError, match=r"deterministic must be a bool, got str: 'yes'"):
        AsyncReservoir(
            frame(4), jittery, 4, client=client, deterministic="yes", max_reservoir_replacement_size=1
        )


def test_ledger_holds_back_rows_that_finish_out_of_order() -> None:
    ledger = Ledger(list("abcd"), SequentialSampler(), max_rows=4, rows_per_job=1, deterministic=True)
    for _ in range(4):
        ledger.submitted(ledger.next_job())
    ledger.finished([2], [RowLoaded("c", [{"x": 1}], 0.0)], now=0.0)
    ledger.finished([1], [RowLoaded("b", [{"x": 1}], 0.0)], now=0.0)
    assert ledger.take() == [] and ledger.counters().entries_waiting == 2  # "a" is not back yet
    assert ledger.next_job() == []  # held rows stay within the bound
    ledger.failed([0], ValueError("a is broken"), "")
    assert [c.uid for c in ledger.take()] == ["b", "c"]  # "a" gave nothing: the order goes on
    ledger.finished([3], [RowLoaded("d", [{"x": 1}], 0.0)], now=0.0)
    assert [c.uid for c in ledger.take()] == ["d"]


def empty_for_some(row: dict[str, Any]) -> Any:
    v = int(row["value"])
    return [] if v % 4 == 1 else jittery(row)


def test_deterministic_honours_the_minimum_and_says_when_it_cannot_be_reached(client: Client) -> None:
    with AsyncReservoir(
        frame(12),
        empty_for_some,
        12,
        min_reservoir_samples=6,
        client=client,
        batch_size=100,
        max_reservoir_replacement_size=2,
        deterministic=True,
        source_sampler=SequentialSampler(),
    ) as r:
        sizes = [len(next(iter(r))["x"]) for _ in range(3)]
        assert sizes[0] >= 6 and sizes == sorted(sizes)

    with AsyncReservoir(
        frame(12),
        empty_for_some,
        12,
        min_reservoir_samples=10,
        client=client,
        max_reservoir_replacement_size=2,
        deterministic=True,
        timeout=60,
    ) as r:
        with pytest.raises(JobError, match="min_reservoir_samples"):
            iter(r)


def test_a_resume_from_a_state_without_members_serves_the_same_epochs(client: Client) -> None:
    """Issue 16, point 4: a state taken before the first iter(), or right after a restore, has no members."""
    with make(client) as r:
        whole = epochs(r, 4)
    with make(client) as r:
        before_any = r.state_dict()
    assert before_any["members"] == []
    with make(client) as r:
        r.load_state_dict(before_any)
        resumed = epochs(r, 4)
    assert len({u for b in resumed[0] for u in b}) >= 10  # the minimum
    assert resumed == whole
    with make(client) as r:
        head = epochs(r, 2)
        saved = r.state_dict()
    with make(client) as r:
        r.load_state_dict(saved)
        again = r.state_dict()  # restored, not iterated: its store is empty
    assert again["members"] == []
    with make(client) as r:
        r.load_state_dict(again)
        assert head + epochs(r, 2) == whole


def failing_once(flag: Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Loads until the file ``flag`` exists, then every row fails."""

    def load(row: dict[str, Any]) -> dict[str, Any]:
        if flag.exists():
            raise RuntimeError(f"row {int(row['value'])} is broken now")
        return jittery(row)

    return load


def test_when_every_row_is_quarantined_the_exact_ingest_raises_job_error(
    client: Client, tmp_path: Path
) -> None:
    """Issue 16, point 5a: above the minimum, the next entries can no longer come: JobError, not a stall."""
    flag = tmp_path / "broken"
    with AsyncReservoir(
        frame(6),
        failing_once(flag),
        6,
        min_reservoir_samples=3,
        client=client,
        max_reservoir_replacement_size=2,
        deterministic=True,
        max_failures_per_uid=1,
        rows_per_job=1,
        timeout=60,  # only a safety net: JobError is expected at once
    ) as r:
        list(r)
        flag.touch()
        with pytest.raises(
            JobError, match=r"none of the 6 source rows can give an entry any more \(6 quarantined"
        ):
            for _ in range(10):  # the 6 rows fill the reservoir first, then loading stops
                list(r)
        assert "is broken now" in str(r.stats().failures)


def test_the_exact_ingest_logs_while_it_waits(
    client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, point 5a: the deterministic wait is never silent (like the wait for the minimum)."""
    import dask_reservoir._runtime.feeder as module

    monkeypatch.setattr(module, "WAIT_WARNING_SECONDS", 0.0)
    utils.GATE.clear()
    try:
        with AsyncReservoir(
            frame(6),
            gated_load,
            6,
            min_reservoir_samples=3,
            client=client,
            max_reservoir_replacement_size=2,
            deterministic=True,
            timeout=0.3,  # ends the wait: nothing loads while the gate is closed
        ) as r:
            with caplog.at_level(logging.WARNING, logger="dask_reservoir"), pytest.raises(TimeoutError):
                iter(r)
            utils.GATE.set()
    finally:
        utils.GATE.set()
    assert "iter() has waited" in caplog.text and "in submission order (deterministic=True)" in caplog.text


ROW_5 = threading.Event()


def empty_for_5(row: dict[str, Any]) -> Any:
    v = int(row["value"])
    if v == 5:
        ROW_5.wait(30)
        return []
    return {"x": np.full(3, v * 10, dtype=np.int64), "label": v}


def test_the_first_epoch_never_counts_a_reload_towards_the_minimum(client: Client) -> None:
    """A reload replaces its UID's entry: counted as one more, the first epoch served 5 of a minimum of 6."""
    ROW_5.clear()
    try:
        with AsyncReservoir(
            frame(6),
            empty_for_5,
            12,
            min_reservoir_samples=6,
            client=client,
            rows_per_job=1,
            max_reservoir_replacement_size=2,
            deterministic=True,
        ) as r:
            outcome: list[Any] = []

            def first_iter() -> None:
                try:
                    outcome.append(len(iter(r)))
                except JobError as exc:
                    outcome.append(exc)

            consumer = threading.Thread(target=first_iter)
            consumer.start()
            # rows 0-4 are ingested, some second loads done; then row 5 gives nothing, and the
            # reloads of 0-4, released after it in submission order, must not count as entries
            utils.poll_for(
                lambda: r.stats().rows_loaded >= 7, timeout=30, what="rows 0-4 loaded, two of them again"
            )
            ROW_5.set()
            consumer.join(60)
            assert len(outcome) == 1 and isinstance(outcome[0], JobError), outcome
            assert "only 5 of the 6 source rows" in str(outcome[0]) and r.reservoir_size() == 5
    finally:
        ROW_5.set()


def gated_from_2(row: dict[str, Any]) -> Any:
    v = int(row["value"])
    if v >= 2:
        utils.GATE.wait(30)
    return {"x": np.full(3, v * 10, dtype=np.int64), "label": v}


def first_epochs(client: Client, *, interrupted: bool) -> list[list[int]]:
    utils.GATE.clear() if interrupted else utils.GATE.set()
    with AsyncReservoir(
        frame(12),
        gated_from_2,
        12,
        min_reservoir_samples=4,
        client=client,
        batch_size=100,
        rows_per_job=1,
        max_jobs_at_once=2,  # rows 0 and 1 first: both load before the gated rows are submitted
        max_reservoir_replacement_size=2,
        deterministic=True,
        timeout=3,
    ) as r:
        if interrupted:  # rows 0 and 1 load, 2 and 3 wait for the gate: the first iter() times out
            with pytest.raises(TimeoutError, match="got 2"):
                iter(r)
            utils.GATE.set()
        return [sorted(next(iter(r))["label"].tolist()) for _ in range(3)]


def test_an_iter_that_raised_leaves_the_rest_of_its_entries_to_the_next(client: Client) -> None:
    """After a TimeoutError the next iter() ingested the whole minimum again (4 more, not the 2 missing)."""
    try:
        assert first_epochs(client, interrupted=True) == first_epochs(client, interrupted=False)
    finally:
        utils.GATE.set()
