"""Resume: state_dict / load_state_dict / save / restore on real clusters, and after a SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir, RandomSampler, SequentialSampler
from tests.utils import frame, iterate_until, load_value, poll_for


def settings(client: Any, **kw: Any) -> dict[str, Any]:
    return {
        "min_reservoir_samples": 5,
        "client": client,
        "batch_size": 5,
        "reservoir_sampler": RandomSampler(seed=3),
        "source_sampler": SequentialSampler(),
        "max_jobs_at_once": 4,
        "rows_per_job": 1,
        **kw,
    }


def run(client: Any, epochs: int) -> dict[str, Any]:
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        iterate_until(r, lambda: r.reservoir_size() == 10)
        for _ in range(epochs):
            list(r)
        return json.loads(json.dumps(r.state_dict()))  # it survives JSON


def test_state_round_trips_and_the_refill_starts_with_the_members(client: Client) -> None:
    state = run(client, 3)
    members = [m["uid"] for m in state["members"]]
    assert len(members) == 10 and state["epoch"] >= 4 and state["source_pass"] == 1
    assert list(state) == [  # the order version 2 files have always had (its parts write their keys)
        "format",
        "version",
        "source",
        "rank",
        "world_size",
        "epoch",
        "epochs",
        "source_pass",
        "source_cursor",
        "source_order_sha256",
        "samplers",
        "next_fill",
        "pending_uids",
        "members",
        "quarantined",
        "counters",
    ]
    assert all(m["times_served"] >= 1 and m["age_seconds"] >= 0 for m in state["members"])
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        r.load_state_dict(state)
        first = [int(v) for b in r for v in b["sample_uid"]]
        # 5 entries wanted, 4 rows out at most: the first 9 rows submitted are former members
        assert len(first) >= 5 and set(first) <= set(members)
        again = r.state_dict()
        assert again["epoch"] == state["epoch"] + 1  # epoch numbers go on
        assert (again["source_pass"], again["source_cursor"]) >= (
            state["source_pass"],
            state["source_cursor"],
        )


def test_same_epoch_numbers_give_the_same_orders_after_a_resume(client: Client) -> None:
    """Epoch k's order is a function of (seed, k): a resumed run with the same members orders them alike."""
    with AsyncReservoir(frame(10), load_value, 10, **settings(client, min_reservoir_samples=10)) as a:
        list(a)
        list(a)
        state = a.state_dict()
        expected = [int(v) for b in a for v in b["sample_uid"]]  # epoch 2
    with AsyncReservoir(frame(10), load_value, 10, **settings(client, min_reservoir_samples=10)) as b:
        b.load_state_dict(state)
        assert [int(v) for batch in b for v in batch["sample_uid"]] == expected


def test_a_state_that_does_not_fit_changes_nothing(client: Client) -> None:
    state = run(client, 1)
    with AsyncReservoir(frame(50), load_value, 10, **settings(client)) as r:
        with pytest.raises(ValueError, match="saved on a source of 100 rows"):
            r.load_state_dict(state)
        assert len(list(r)) >= 1 and r.state_dict()["epoch"] == 1  # it runs on, from the start
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        list(r)
        with pytest.raises(ValueError, match=r"must come before the first iter\(\)"):
            r.load_state_dict(state)
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        with pytest.raises(ValueError, match=r"state\[.version.\] 4 is not supported"):
            r.load_state_dict({**state, "version": 4})


def test_save_and_restore_through_a_file(client: Client, tmp_path: Path) -> None:
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        list(r)
        path = r.save(tmp_path / "ckpt.json")
        saved = json.loads(path.read_text())
    with AsyncReservoir.restore(path, frame(100), load_value, 10, **settings(client)) as r:
        assert r.state_dict()["epoch"] == saved["epoch"]
    path.write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match="is not a dask_reservoir state file"):
        AsyncReservoir.restore(path, frame(100), load_value, 10, **settings(client))


TRAIN = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, pandas as pd
    from dask_reservoir import AsyncReservoir, RandomSampler, SequentialSampler

    def load(row):
        time.sleep(0.002)
        return {"x": np.float32(row["value"])}

    address, checkpoint, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    args = (pd.DataFrame({"value": np.arange(200)}), load, 20)
    kwargs = dict(min_reservoir_samples=10, client=address, batch_size=5, reservoir_sampler=RandomSampler(seed=1),
                  source_sampler=SequentialSampler(), max_jobs_at_once=4, rows_per_job=1)
    if mode == "train":
        r = AsyncReservoir(*args, **kwargs)
        while True:
            for batch in r:
                pass
            if r.reservoir_size() == 20:  # checkpoints of a full reservoir
                r.save(checkpoint)
                print("saved", r.state_dict()["epoch"], flush=True)
    else:
        r = AsyncReservoir.restore(checkpoint, *args, **kwargs)
        start = r.state_dict()["epoch"]
        first = sorted(int(v) for b in r for v in b["sample_uid"])
        print(json.dumps({"start": start, "after": r.state_dict()["epoch"], "first": first}), flush=True)
        r.close()
    """
)


def test_resume_in_a_new_process_after_the_trainer_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    checkpoint = tmp_path / "ckpt.json"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False),
    ):
        address = cluster.scheduler_address
        trainer = subprocess.Popen(
            [sys.executable, str(script), address, str(checkpoint), "train"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert trainer.stdout is not None
            for line in trainer.stdout:
                if line.startswith("saved") and int(line.split()[1]) >= 6:
                    break
            trainer.send_signal(signal.SIGKILL)  # mid-run: it was iterating the next epoch
            trainer.wait(10)
        finally:
            trainer.kill()
            trainer.wait(10)
        saved = json.loads(checkpoint.read_text())
        done = subprocess.run(
            [sys.executable, str(script), address, str(checkpoint), "resume"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["start"] == saved["epoch"] >= 6 and result["after"] == saved["epoch"] + 1
    members = {m["uid"] for m in saved["members"]}
    assert len(members) == 20 and set(result["first"]) <= members
    assert pd.Series(result["first"]).is_unique


def test_a_state_with_bad_quarantined_uids_leaves_the_reservoir_working(client: Client) -> None:
    state = run(client, 1)
    with AsyncReservoir(frame(100), load_value, 10, **settings(client)) as r:
        with pytest.raises(ValueError, match="UIDs in a state are ints"):
            r.load_state_dict({**state, "quarantined": [[1, 2]]})
        assert len(list(r)) >= 1  # still loading and serving


def recording(log: Path, tag: Path, run: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A loader writing ``<tag> <value> <run>`` to ``log`` at each call (the tag read from the file ``tag``).

    ``run`` names the reservoir: a task a closed reservoir cancelled may still start on its
    worker afterwards (the release reaches the worker later), and must not count for the next.

    A call tagged ``b0`` then waits (up to 30 s) for a file ``release`` beside ``tag``: a job of a
    reservoir about to load a state stays in flight, so that its runner (one row in flight at most)
    starts no other job before ``load_state_dict()`` replaces it.
    """
    release = tag.with_name("release")

    def load(row: dict[str, Any]) -> dict[str, Any]:
        current = tag.read_text()
        with log.open("a") as f:
            f.write(f"{current} {int(row['value'])} {run}\n")
        if current == "b0":
            deadline = time.monotonic() + 30
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return load_value(row)

    return load


def loads(log: Path, tag: str, run: str) -> list[int]:
    """The values ``run`` loaded under ``tag``, in the order of the calls."""
    lines = [line.split() for line in log.read_text().splitlines()]
    return [int(value) for current, value, by in lines if current == tag and by == run]


def test_an_unseeded_source_order_resumes_its_pass_loading_every_row_once(
    client: Client, tmp_path: Path
) -> None:
    """Issue 16, point 3: the pass order of an unseeded source_sampler is in the state.

    One row out at a time (``max_jobs_at_once=1``), so the log of calls is the submission order.
    """
    n = 40
    log, tag = tmp_path / "loads.txt", tmp_path / "tag.txt"
    log.write_text("")
    tag.write_text("a")
    kw = {
        **settings(client, min_reservoir_samples=4, batch_size=4, max_jobs_at_once=1),
        "source_sampler": None,
    }
    with AsyncReservoir(
        frame(n), recording(log, tag, "first"), 4, **{**kw, "source_sampler": RandomSampler()}
    ) as r:
        iterate_until(r, lambda: r.stats().rows_loaded >= 15)
        state = json.loads(json.dumps(r.state_dict()))
    assert state["source_pass"] == 1 and 15 <= state["source_cursor"] < n
    pending = [int(u) for u in state["pending_uids"]]
    first = list(dict.fromkeys([m["uid"] for m in state["members"]] + pending))
    done_before = set(loads(log, "a", "first")) - set(pending)  # every call of the first run was in pass 0
    tag.write_text("b0")
    with AsyncReservoir(
        frame(n), recording(log, tag, "second"), 4, **{**kw, "source_sampler": RandomSampler()}
    ) as r:
        poll_for(
            lambda: bool(loads(log, "b0", "second")), what="the job started before load_state_dict"
        )  # bound: 1 row
        tag.write_text("b")
        r.load_state_dict(state)
        (tmp_path / "release").write_text("")  # the held job of the replaced runner may end
        wanted = len(first) + n - state["source_cursor"]  # the refill, then the rest of the pass
        iterate_until(r, lambda: len(loads(log, "b", "second")) >= wanted)
    resumed = loads(log, "b", "second")
    assert resumed[: len(first)] == first
    rest = resumed[len(first) : wanted]
    assert sorted([*done_before, *pending, *rest]) == list(range(n))  # each row of the pass once


def test_a_sampler_ordering_the_pass_otherwise_is_refused(client: Client) -> None:
    kw = settings(client, source_sampler=RandomSampler(seed=1))
    with AsyncReservoir(frame(30), load_value, 10, **kw) as r:
        list(r)
        state = r.state_dict()
    assert state["source_pass"] == 1 and state["samplers"]["source_entropy"] is None
    with AsyncReservoir(frame(30), load_value, 10, **{**kw, "source_sampler": RandomSampler(seed=2)}) as r:
        with pytest.raises(ValueError, match=r"orders pass 0 differently from the run that saved the state"):
            r.load_state_dict(state)
        assert len(list(r)) >= 1  # nothing applied: it runs on


def test_a_dask_source_resumes(client: Client) -> None:
    """load_state_dict() closed the replaced runner, which released the dask source's partitions."""
    import dask.dataframe as dd

    ddf = dd.from_pandas(pd.DataFrame({"sample_uid": np.arange(60), "value": np.arange(60)}), npartitions=4)
    options: dict[str, Any] = {
        "min_reservoir_samples": 8,
        "batch_size": 4,
        "rows_per_job": 7,
        "client": client,
    }
    with AsyncReservoir(ddf, load_value, 16, **options) as first:
        list(first)
        state = first.state_dict()
    with AsyncReservoir(ddf, load_value, 16, **options) as second:
        second.load_state_dict(state)
        for _ in range(3):
            for batch in second:
                assert (batch["label"] == batch["sample_uid"]).all()
        assert second.stats().rows_failed == 0
