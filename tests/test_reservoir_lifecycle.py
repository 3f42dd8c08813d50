"""AsyncReservoir's lifetime: no copies, finalizers that never block dask's event loop, quiet exit."""

from __future__ import annotations

import copy
import gc
import inspect
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from dask_reservoir._core.options import DEFAULTS
from tests.utils import frame, load_value, poll_for


def test_signature_defaults_are_the_options_defaults() -> None:
    """Each option's default is written once, in ReservoirOptions."""
    params = inspect.signature(AsyncReservoir.__init__).parameters
    assert {name: params[name].default for name in DEFAULTS} == DEFAULTS


def test_a_reservoir_cannot_be_copied_or_pickled(client: Client) -> None:
    with AsyncReservoir(frame(4), load_value, 4, min_reservoir_samples=4, client=client) as r:
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match=r"cannot be (copied|pickled).*subsample"):
                attempt(r)
        # the original still works after the refused copies
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == [0, 1, 2, 3]


CLOSED_ON: list[str] = []


class RecordingReservoir(AsyncReservoir):
    """Records the thread each close() runs on."""

    def close(self) -> None:
        CLOSED_ON.append(threading.current_thread().name)
        super().close()


class Holder:
    """A reservoir in a reference cycle: only the cyclic GC can finalize it."""

    def __init__(self, client: Client) -> None:
        self.me = self
        self.r = RecordingReservoir(frame(6), load_value, 6, min_reservoir_samples=6, client=client)


def test_cyclic_gc_on_the_event_loop_does_not_block_it(client: Client) -> None:
    CLOSED_ON.clear()
    holder = Holder(client)
    list(holder.r)
    runner_thread = holder.r._runner._thread
    del holder
    collected = threading.Event()
    loop_thread: list[str] = []

    def collect_on_loop() -> None:
        loop_thread.append(threading.current_thread().name)
        gc.collect()  # finalizes the reservoir on dask's event-loop thread
        collected.set()

    client.loop.add_callback(collect_on_loop)
    assert collected.wait(30)
    poll_for(lambda: bool(CLOSED_ON), what="the finalizer to close the reservoir")
    assert CLOSED_ON[0].startswith("dask_reservoir-finalizer") and CLOSED_ON[0] != loop_thread[0]
    # the loop is free at once: a task round trip completes while the reservoir closes
    assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3
    poll_for(lambda: not runner_thread.is_alive(), timeout=30, what="the runner to stop")


def test_dropped_reservoir_closes_itself(client: Client) -> None:
    r = AsyncReservoir(frame(6), load_value, 6, min_reservoir_samples=6, client=client)
    list(r)
    runner_thread = r._runner._thread
    del r
    poll_for(
        lambda: not runner_thread.is_alive(), timeout=30, what="the runner of a dropped reservoir to stop"
    )


def test_iterating_a_reservoir_held_by_nothing_else_serves_every_batch(client: Client) -> None:
    """``for b in AsyncReservoir(...)``: the iterator keeps its reservoir open (review of issue 17)."""
    values = []
    for batch in AsyncReservoir(
        frame(6), load_value, 6, min_reservoir_samples=6, batch_size=2, client=client
    ):
        gc.collect()  # a reservoir that only the loop's iterator holds is not finalized meanwhile
        assert batch["label"].tolist() == batch["sample_uid"].tolist()
        values += batch["label"].tolist()
    assert values == [0, 1, 2, 3, 4, 5]


def test_iterating_a_subset_held_by_nothing_else_serves_its_rows(client: Client) -> None:
    with AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=client, batch_size=4) as r:
        list(r)
        served = [b["sample_uid"].tolist() for b in r.subsample_uids([6, 2, 4])]
        gc.collect()
        it = iter(r.subsample(4, seed=1))
        gc.collect()
        first = next(it)
        assert first["label"].tolist() == first["sample_uid"].tolist() and len(first["label"]) == 4
        it.close()
    assert served == [[6, 2, 4]]


def test_closing_the_owner_of_the_client_closes_subsets_of_subsets(cluster_client: Client) -> None:
    """A subset's subsets join the owner's family: its close() closes them all (review of issue 17)."""
    address = cluster_client.scheduler.address
    r = AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=address)  # owns its client
    child = r.subsample_uids([1, 2, 3, 4])
    grandchild = child.subsample_uids([2, 3])
    threads = [x._runner._thread for x in (r, child, grandchild)]
    r.close()
    assert [x.stats().status for x in (r, child, grandchild)] == ["closed"] * 3
    poll_for(lambda: not any(t.is_alive() for t in threads), timeout=30, what="every runner thread to stop")


SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd
    from distributed import Client, LocalCluster
    from dask_reservoir import AsyncReservoir

    def load(row):
        return {"x": np.full(int(sys.argv[2]), row["value"], np.float32)}

    if __name__ == "__main__":
        source = pd.DataFrame({"value": range(40)})
        if sys.argv[1] == "embedded":
            r = AsyncReservoir(source, load, 16, min_reservoir_samples=8, nb_workers=1, batch_size=4)
        else:  # the user's own client and cluster, never closed either
            client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                         dashboard_address=None))
            r = AsyncReservoir(source, load, 16, min_reservoir_samples=8, client=client, batch_size=4)
        held = iter(r)
        next(held)  # an iterator alive at exit
        for batch in r:
            pass
        print("done", flush=True)
        # no close(): the interpreter exits with the runner busy
    """
)


@pytest.mark.parametrize(
    ("cluster", "floats"),
    [
        ("embedded", 3),
        ("own-client", 3),
        # 8 MB results: transfers are still running at exit, and a fetch cut off makes the
        # worker log a CommClosedError traceback (about one run in three before the fix)
        ("embedded", 2_000_000),
    ],
)
def test_unclosed_reservoir_exits_quietly(tmp_path: Any, cluster: str, floats: int) -> None:
    script = tmp_path / "unclosed.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, str(script), cluster, str(floats)],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    assert "cannot schedule new futures" not in done.stderr, done.stderr
    assert "Traceback" not in without_comm_closed_notes(done.stderr), done.stderr


def without_comm_closed_notes(stderr: str) -> str:
    """``stderr`` without distributed's INFO notes that a batched comm closed (with their tracebacks).

    A user's own cluster, never closed, closes its in-process comms at interpreter exit; distributed
    logs that at INFO level with the traceback of the closed write ("Batched Comm Closed"): its
    own shutdown, not an error, and nothing of the reservoir's.
    """
    kept: list[str] = []
    skipping = False
    for line in stderr.splitlines():
        if re.match(r"^\d{4}-\d{2}-\d{2} ", line):  # a new log record
            skipping = "distributed.batched - INFO - Batched Comm Closed" in line
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def test_comm_closed_notes_are_the_only_tracebacks_dropped() -> None:
    note = "2026-12-07 01:51:05,370 - distributed.batched - INFO - Batched Comm Closed <InProc>\nTraceback (most recent call last):\n  ...\nCommClosedError"
    error = (
        "2026-12-07 01:51:06,000 - dask_reservoir - ERROR - boom\nTraceback (most recent call last):\n  ..."
    )
    assert "Traceback" not in without_comm_closed_notes(note)
    assert "Traceback" in without_comm_closed_notes(note + "\n" + error)
    assert "Traceback" in without_comm_closed_notes("Traceback (most recent call last):\n  File ...")


def test_an_unpicklable_function_is_refused_clearly(client: Client) -> None:
    lock = threading.Lock()

    def load(row: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return load_value(row)

    with pytest.raises(TypeError, match=r"function_to_run must be picklable with cloudpickle.*lock"):
        AsyncReservoir(frame(4), load, 4, client=client)
