"""What every system in a workload shares: loaders, the consumer, timers, memory probes."""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster

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


def kb_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W5: a 1 KB sample."""
    return {"x": np.full(256, row["sample_uid"] % 251, dtype=np.float32)}


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
    """The training loop of W1: a fixed step per batch; times waits for batches."""

    step: float
    batches: int = 0
    waited: float = 0.0
    first_batch_at: float | None = None
    uids: set[int] = field(default_factory=set)
    warm_uids: set[int] = field(default_factory=set)

    def run(
        self,
        batches: Callable[[], Iterator[Any]],
        *,
        seconds: float,
        start: float,
        uid_key: str | None = "sample_uid",
    ) -> None:
        """Iterate epochs of ``batches()`` until ``seconds`` after the first batch."""
        deadline = None
        while True:
            t0 = time.perf_counter()
            it = batches()
            for batch in _timed(it, self, t0):
                now = time.perf_counter()
                if self.first_batch_at is None:
                    self.first_batch_at = now - start
                    deadline = now + seconds
                    self.waited = 0.0  # measured after the first batch
                    self.t_first = now
                if uid_key is not None and self.first_batch_at is not None:
                    seen = self.uids if now - self.t_first >= WARMUP else self.warm_uids
                    seen.update(int(u) for u in np.asarray(batch[uid_key]).ravel())
                time.sleep(self.step)
                self.batches += 1
                if deadline is not None and time.perf_counter() >= deadline:
                    self.t_end = time.perf_counter()
                    return

    def summary(self, loader_capacity: float) -> dict[str, float]:
        wall = self.t_end - self.t_first
        return {
            "first_batch_s": self.first_batch_at or float("nan"),
            "batches_per_s": (self.batches - 1) / wall,
            "wait_fraction": self.waited / wall,
            "distinct_uids_per_s": len(self.uids - self.warm_uids) / (wall - WARMUP),
            "step_rate_fraction": ((self.batches - 1) / wall) * self.step,
            "fresh_fraction_of_loaders": (len(self.uids - self.warm_uids) / (wall - WARMUP))
            / loader_capacity,
        }


def _timed(it: Iterator[Any], consumer: Consumer, t0: float) -> Iterator[Any]:
    """Yield from ``it``, adding the time spent getting each item to ``consumer.waited``."""
    start = t0
    while True:
        try:
            item = next(it)
        except StopIteration:
            consumer.waited += time.perf_counter() - start
            return
        consumer.waited += time.perf_counter() - start
        yield item
        start = time.perf_counter()


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


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def cpu_count() -> int:
    return os.cpu_count() or 1
