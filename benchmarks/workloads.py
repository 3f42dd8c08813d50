"""The workloads W1-W5: each returns rows of results (system, metrics)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from distributed import as_completed

from benchmarks import peers
from benchmarks.common import (
    IMAGE_BYTES,
    IMAGE_SHAPE,
    Consumer,
    PeakRSS,
    image_loader,
    kb_loader,
    local_cluster,
    rss_mb,
    slow_image_loader,
    tiny_loader,
)
from dask_reservoir import AsyncReservoir, RandomSampler

Result = dict[str, Any]


# ---------------------------------------------------------------- W1 stall
def w1_reservoir(cfg: dict[str, Any], scheduler: str | None) -> Result:
    source = pd.DataFrame({"delay": np.full(cfg["rows"], cfg["delay"])})
    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"])
    with PeakRSS() as mem, local_cluster(cfg["workers"], scheduler) as client:
        with AsyncReservoir(
            source,
            slow_image_loader,
            cfg["reservoir"],
            min_reservoir_samples=cfg["minimum"],
            client=client,
            batch_size=cfg["batch"],
            reservoir_sampler=RandomSampler(seed=0),
            max_jobs_at_once=cfg["in_flight"],
        ) as r:
            consumer.run(lambda: iter(r), seconds=cfg["seconds"], start=start)
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def w1(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    rows = [{"system": "dask_reservoir", **w1_reservoir(cfg, scheduler)}]
    rows.append({"system": "naive dask loop", **peers.w1_naive_dask(cfg, scheduler)})
    for name, fn in (("torch DataLoader", peers.w1_torch), ("MONAI SmartCache", peers.w1_monai)):
        rows.append({"system": name, **fn(cfg)})
    return rows


# ---------------------------------------------------------------- W2 serve ceiling
def _full_reservoir(client: Any, n: int, loader: Any, **kwargs: Any) -> AsyncReservoir:
    """A reservoir of ``n`` entries, full, with background loading paused at its bound.

    Serving is measured alone: with ``max_reservoir_replacement_size=1`` and large jobs,
    no job runs while the serving loop is timed.
    """
    source = pd.DataFrame({"i": np.arange(n)})
    kwargs = {"reservoir_sampler": RandomSampler(seed=0), "max_reservoir_replacement_size": 1, **kwargs}
    r = AsyncReservoir(source, loader, n, min_reservoir_samples=n, client=client, **kwargs)
    iter(r)  # wait until full
    deadline = time.monotonic() + 120
    while r.stats().rows_in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in r:  # one warm epoch
        pass
    return r


def _time_batches(r: AsyncReservoir, count: int) -> tuple[int, float, Any]:
    """Serve at least ``count`` batches; return (batches, seconds, the last batch)."""
    served, last = 0, None
    t0 = time.perf_counter()
    while served < count:
        for last in r:  # noqa: B007 - the last batch is returned
            served += 1
            if served >= count:
                break
    return served, time.perf_counter() - t0, last


def w2(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    n, batch, nbatches = cfg["entries"], cfg["batch"], cfg["batches"]
    batch_bytes = batch * IMAGE_BYTES
    results = []
    with local_cluster(2, scheduler) as client:
        r = _full_reservoir(
            client, n, image_loader, batch_size=batch, rows_per_job=256, max_jobs_at_once=1024
        )
        with r:
            served, seconds, last = _time_batches(r, nbatches)
            if last["image"].shape != (batch, *IMAGE_SHAPE):
                raise RuntimeError(f"unexpected batch shape {last['image'].shape}")
    results.append(
        {
            "system": "dask_reservoir",
            "batches_per_s": served / seconds,
            "GB_per_s": served * batch_bytes / seconds / 1e9,
        }
    )
    store = np.random.default_rng(0).standard_normal((n, *IMAGE_SHAPE), dtype=np.float32)
    buf = np.empty((batch, *IMAGE_SHAPE), np.float32)
    rng = np.random.default_rng(1)
    idx = [rng.integers(0, n, batch) for _ in range(nbatches)]
    t0 = time.perf_counter()
    for i in idx:
        np.take(store, i, axis=0, out=buf, mode="clip")
    seconds = time.perf_counter() - t0
    results.append(
        {
            "system": "numpy take(out=, clip) limit",
            "batches_per_s": nbatches / seconds,
            "GB_per_s": nbatches * batch_bytes / seconds / 1e9,
        }
    )
    samples = [store[i] for i in range(n)]
    t0 = time.perf_counter()
    for i in idx:
        np.stack([samples[j] for j in i])
    seconds = time.perf_counter() - t0
    results.append(
        {
            "system": "np.stack of per-sample arrays (trw-style)",
            "batches_per_s": nbatches / seconds,
            "GB_per_s": nbatches * batch_bytes / seconds / 1e9,
        }
    )
    return results


# ---------------------------------------------------------------- W3 fill throughput
FILL_CAPACITY = 8192
"""Reservoir capacity while measuring fill: entries replace the oldest, as in a long run."""


def _fill_rate(client: Any, loader: Any, n: int, seconds: float, **kwargs: Any) -> float:
    source = pd.DataFrame({"i": np.arange(n)})
    with AsyncReservoir(source, loader, FILL_CAPACITY, client=client, **kwargs) as r:
        iter(r)
        s0 = r.stats().entries_ingested
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            iter(r)  # ingests everything waiting; the epoch itself is not consumed
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        return (r.stats().entries_ingested - s0) / elapsed


def _raw_dask_rate(client: Any, loader: Any, in_flight: int, seconds: float) -> float:
    ac = as_completed(loop=client.loop)
    i = 0
    for _ in range(in_flight):
        ac.add(client.submit(loader, {"sample_uid": i}, pure=False))
        i += 1
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = ac.next_batch(block=True)
        client.gather(batch)
        done += len(batch)
        for _ in batch:
            ac.add(client.submit(loader, {"sample_uid": i}, pure=False))
            i += 1
        del batch
    elapsed = time.perf_counter() - t0
    client.cancel(list(ac.futures))
    ac.clear()
    return done / elapsed


def w3(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    results = []
    seconds = cfg["seconds"]
    with local_cluster(2, scheduler) as client:
        for name, loader, best in (
            ("tiny rows", tiny_loader, cfg["best_tiny"]),
            ("49 KB rows", image_loader, cfg["best_image"]),
        ):
            k = cfg["in_flight"]
            raw = _raw_dask_rate(client, loader, k, seconds)
            one = _fill_rate(client, loader, cfg["rows"], seconds, max_jobs_at_once=k)
            packed = _fill_rate(
                client, loader, cfg["rows"], seconds, rows_per_job=best, max_jobs_at_once=best * 8
            )
            auto = _fill_rate(client, loader, cfg["rows"], seconds, rows_per_job="auto")
            results.append({"system": f"raw dask loop, {name}, {k} in flight", "samples_per_s": raw})
            variants = (
                (f"rows_per_job=1, {k} rows in flight", one),
                (f"rows_per_job={best}", packed),
                ("rows_per_job='auto'", auto),
            )
            for label, rate in variants:
                results.append(
                    {
                        "system": f"dask_reservoir {label}, {name}",
                        "samples_per_s": rate,
                        "ratio_to_raw": rate / raw,
                    }
                )
    return results


# ---------------------------------------------------------------- W4 scale
def w4(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    results: list[Result] = []
    with local_cluster(2, scheduler) as client:
        for n in cfg["sizes"]:
            r = _full_reservoir(
                client, n, tiny_loader, batch_size=64, rows_per_job=2048, max_jobs_at_once=16384
            )
            with r:
                batches, seconds, _ = _time_batches(r, cfg["batches"])
            results.append(
                {"system": f"dask_reservoir, {n:.0e} entries", "us_per_batch": 1e6 * seconds / batches}
            )
    base = results[0]["us_per_batch"]
    for row in results:
        row["ratio_to_smallest"] = row["us_per_batch"] / base
    return results


# ---------------------------------------------------------------- W5 memory
def w5(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    n = cfg["entries"]
    with local_cluster(2, scheduler) as client:
        base = rss_mb()
        r = _full_reservoir(client, n, kb_loader, rows_per_job=2048, max_jobs_at_once=16384)
        with r:
            held = rss_mb() - base
        raw = n * 1024 / 2**20
    return [
        {
            "system": f"dask_reservoir, {n:.0e} entries of 1 KB",
            "rss_growth_mb": held,
            "raw_mb": raw,
            "ratio": held / raw,
        }
    ]
