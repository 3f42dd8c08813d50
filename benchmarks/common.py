"""What every system in a workload shares: loaders, the consumer, timers, memory probes."""

from __future__ import annotations

import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psutil
from distributed import Client, LocalCluster

Result = dict[str, Any]
IMAGE_SHAPE = (3, 64, 64)
WARMUP = 0.25
"""Seconds after the first batch whose UIDs do not count as fresh (they were loaded before)."""
IMAGE_BYTES = int(np.prod(IMAGE_SHAPE)) * 4


def slow_image_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W1's loader: sleep ``row["delay"]`` seconds, return an image and a label."""
    time.sleep(float(row["delay"]))
    uid = int(row["sample_uid"])
    return {"image": np.full(IMAGE_SHAPE, uid % 251, dtype=np.float32), "label": np.int64(uid % 10)}


def image_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W2/W3: a 49 KB sample, no sleep."""
    uid = int(row["sample_uid"])
    return {"image": np.full(IMAGE_SHAPE, uid % 251, dtype=np.float32), "label": np.int64(uid % 10)}


def tiny_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W3/W4: a tiny sample."""
    return {"x": row["sample_uid"]}


def millisecond_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W3's fast loader: sleep 1 ms, return a tiny sample."""
    time.sleep(0.001)
    return {"x": row["sample_uid"]}


def kb_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W5: a 1 KB sample."""
    return {"x": np.full(256, row["sample_uid"] % 251, dtype=np.float32)}


def sixteen_byte_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W5: a 16-byte sample (four float32)."""
    return {"x": np.full(4, row["sample_uid"] % 251, dtype=np.float32)}


def tiny_batched(frame: pd.DataFrame) -> pd.DataFrame:
    """W8: ``tiny_loader`` vectorized (``batched=True``): one produced row per source row."""
    return pd.DataFrame({"sample_uid": frame["sample_uid"], "x": frame["sample_uid"]})


class PeakRSS:
    """Sample this process's RSS (and its children's) in a thread; keep the peak."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _rss(self) -> int:
        proc = psutil.Process()
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.period)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@dataclass
class Consumer:
    """The training loop of W1: a fixed step per batch; times every wait for a batch.

    A batch's stall is the time from the end of the previous step to the batch being
    returned: the ``next()`` call, plus ``iter()`` (and the ``next()`` that ended the
    previous epoch) when an epoch starts.  The step includes the consumer's own
    bookkeeping, and its sleeps are shortened by the oversleep so far, so that steps
    average ``step`` exactly and the step-limited rate is ``1 / step``.
    """

    step: float
    hold_gil: bool = False
    """Spin in Python for the step (a pure-Python training step) instead of sleeping (a step
    that releases the GIL, as native code and GPU work do)."""
    batches: int = 0
    stalls: list[float] = field(default_factory=list)
    first_batch_at: float = float("nan")
    uids: set[int] = field(default_factory=set)
    warm_uids: set[int] = field(default_factory=set)
    step_seconds: float = 0.0
    _oversleep: float = 0.0
    _t_first: float = 0.0
    _t_end: float = 0.0
    _cpu_first: float = 0.0
    _cpu_end: float = 0.0

    def run(
        self,
        batches: Callable[[], Iterator[Any]],
        *,
        seconds: float,
        start: float,
        uid_key: str | None = "sample_uid",
    ) -> None:
        """Iterate epochs of ``batches()`` until ``seconds`` after the first batch."""
        deadline = float("inf")
        mark = time.perf_counter()  # the end of the previous step
        while True:
            for batch in batches():  # called after ``mark``: iter() counts in the next stall
                now = time.perf_counter()
                if self.batches == 0:
                    self._start(now, start)
                    deadline = now + seconds
                else:
                    self.stalls.append(now - mark)
                self.batches += 1
                self._train(batch, now, uid_key)
                mark = time.perf_counter()
                if mark >= deadline:
                    self._t_end, self._cpu_end = mark, process_cpu_seconds()
                    return

    def _start(self, now: float, start: float) -> None:
        self.first_batch_at = now - start
        self._t_first, self._cpu_first = now, process_cpu_seconds()

    def _train(self, batch: Any, t0: float, uid_key: str | None) -> None:
        """One step of ``self.step`` seconds on average: note the batch's UIDs, then sleep.

        The sleep is shortened by a running estimate of how much ``time.sleep`` oversleeps
        (about 0.1-0.3 ms here, 2-5 % of a 5 ms step); a single long hiccup moves the
        estimate only a little, so steps never bunch up to catch up with it.
        """
        if uid_key is not None:
            seen = self.uids if t0 - self._t_first >= WARMUP else self.warm_uids
            seen.update(int(u) for u in np.asarray(batch[uid_key]).ravel())
        wanted = max(0.0, self.step - self._oversleep - (time.perf_counter() - t0))
        t1 = time.perf_counter()
        if self.hold_gil:
            _spin(wanted)
        else:
            time.sleep(wanted)
        over = time.perf_counter() - t1 - wanted
        self._oversleep = min(0.9 * self._oversleep + 0.1 * over, self.step / 2)
        self.step_seconds += time.perf_counter() - t0

    def summary(self, loader_capacity: float) -> dict[str, float]:
        wall = self._t_end - self._t_first
        stalls = np.asarray(self.stalls) if self.stalls else np.array([float("nan")])
        fresh_per_s = len(self.uids - self.warm_uids) / (wall - WARMUP)
        return {
            "first_batch_s": self.first_batch_at,
            "batches_per_s": self.batches / wall,
            "step_rate_fraction": self.batches / wall * self.step,
            "wait_fraction": float(np.nansum(stalls)) / wall,
            "stall_p50_ms": float(np.percentile(stalls, 50)) * 1e3,
            "stall_p99_ms": float(np.percentile(stalls, 99)) * 1e3,
            "distinct_uids_per_s": fresh_per_s,
            "fresh_fraction_of_loaders": fresh_per_s / loader_capacity,
            "cpu_cores": (self._cpu_end - self._cpu_first) / wall,
        }


def _spin(seconds: float) -> None:
    """Hold the GIL for ``seconds`` (Python bytecode, released only at the switch interval)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(100):
            x += i


def process_cpu_seconds() -> float:
    """CPU time of this process alone (all its threads; not its children)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


@contextmanager
def local_cluster(workers: int = 2, scheduler: str | None = None) -> Iterator[Client]:
    """A client of ``scheduler``, or of a fresh LocalCluster of ``workers`` single-thread processes."""
    if scheduler:
        with Client(scheduler, set_as_default=False, timeout="10s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def subprocess_cluster(workers: int = 2, scheduler: str | None = None) -> Iterator[Client]:
    """A client of ``scheduler``, or of a ``dask scheduler`` and ``workers`` single-thread
    ``dask worker`` processes started here: unlike a LocalCluster's, the scheduler does not run
    in this process, so this process's CPU time is the client's alone."""
    if scheduler:
        with Client(scheduler, set_as_default=False, timeout="10s") as client:
            yield client
        return
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
            )
        )
        for _ in range(workers):
            worker = [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
            procs.append(subprocess.Popen(worker, **quiet))
        with Client(address, set_as_default=False, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
            yield client
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def import_seconds(module: str = "distributed") -> float:
    """Wall time of ``python -c "import <module>"`` in a fresh interpreter."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - t0


RATIOS = "_ratios"
"""Key of a row's derived columns, filled in by :func:`with_ratios` after the medians."""


def ratios(*specs: tuple[str, str, str]) -> Result:
    """Ask for derived columns: each ``(column, metric, reference)`` is ``row[metric]`` divided by
    the ``metric`` of the row whose system is ``reference`` (in the same workload)."""
    return {RATIOS: {column: (metric, reference) for column, metric, reference in specs}}


def with_ratios(rows: list[Result]) -> list[Result]:
    """The rows with their derived columns: ratios of the medians, not medians of ratios."""
    by_system = {row["system"]: row for row in rows}
    out = []
    for row in rows:
        specs = row.get(RATIOS, {})
        done = {k: v for k, v in row.items() if k != RATIOS}
        for column, (metric, reference) in specs.items():
            done[column] = _divide(row.get(metric), by_system.get(reference, {}).get(metric))
        out.append(done)
    return out


def _divide(a: Any, b: Any) -> float:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return float("nan")
    return float(a) / float(b)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def cpu_count() -> int:
    return os.cpu_count() or 1
