"""The workloads W1-W9 (W6's vectorized fill is in :mod:`benchmarks.fill`): each returns rows of results (system, metrics).

Ratio columns are asked for with :func:`benchmarks.common.ratios` and computed by the runner from the
medians over repeats (:func:`benchmarks.common.with_ratios`).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
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
    Result,
    image_loader,
    import_seconds,
    kb_loader,
    local_cluster,
    millisecond_loader,
    process_cpu_seconds,
    ratios,
    rss_mb,
    sixteen_byte_loader,
    slow_image_loader,
    subprocess_cluster,
    tiny_batched,
    tiny_loader,
)
from dask_reservoir import AsyncReservoir, RandomSampler

# ---------------------------------------------------------------- W1 stall
FLOOR = "first-batch floor: minimum x load / workers + import distributed"
HOLD_GIL = "hold_gil"
"""A W1 variant's key (not an ``AsyncReservoir`` argument): the step spins in Python."""
FIRST_VS_FLOOR = ("first_batch_vs_floor", "first_batch_s", FLOOR)
LOADING = "pure loading time: minimum x load / workers (imports not counted)"
FIRST_VS_LOADING = ("first_batch_vs_loading", "first_batch_s", LOADING)


def unsupported(kwargs: dict[str, Any]) -> list[str]:
    """The keyword arguments the installed ``AsyncReservoir`` does not accept."""
    params = inspect.signature(AsyncReservoir).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return [k for k in kwargs if k not in params and k != HOLD_GIL]


@contextlib.contextmanager
def _client_for(kwargs: dict[str, Any], cfg: dict[str, Any], scheduler: str | None) -> Iterator[Any]:
    """W1's cluster, or none when the variant passes ``client=None`` (the reservoir starts its own)."""
    if "client" in kwargs:
        yield kwargs["client"]
        return
    with local_cluster(cfg["workers"], scheduler) as client:
        yield client


def w1_reservoir(cfg: dict[str, Any], scheduler: str | None, kwargs: dict[str, Any]) -> Result:
    """W1 with the workload's settings plus ``kwargs``; the clock starts before the cluster's."""
    kwargs = dict(kwargs)
    hold_gil = bool(kwargs.pop(HOLD_GIL, False))
    source = pd.DataFrame({"delay": np.full(cfg["rows"], cfg["delay"])})
    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"], hold_gil=hold_gil)
    with PeakRSS() as mem, _client_for(kwargs, cfg, scheduler) as client:
        settings = {**kwargs, "client": client}
        with AsyncReservoir(
            source,
            slow_image_loader,
            cfg["reservoir"],
            min_reservoir_samples=cfg["minimum"],
            batch_size=cfg["batch"],
            reservoir_sampler=RandomSampler(seed=0),
            **settings,
        ) as r:
            consumer.run(lambda: iter(r), seconds=cfg["seconds"], start=start)
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def _w1_variant(name: str, kwargs: dict[str, Any], cfg: dict[str, Any], scheduler: str | None) -> Result:
    missing = unsupported(kwargs)
    if missing:
        return {"system": name, "note": f"skipped: this AsyncReservoir does not accept {', '.join(missing)}"}
    if scheduler and "client" in kwargs:
        return {"system": name, "note": "skipped: --scheduler given"}
    return {
        "system": name,
        **w1_reservoir(cfg, scheduler, kwargs),
        **ratios(FIRST_VS_FLOOR, FIRST_VS_LOADING),
    }


def _kwargs_label(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def w1_floor(cfg: dict[str, Any]) -> Result:
    """The least time to a first batch: load the minimum on every worker, after importing dask."""
    imported = import_seconds("distributed")
    loading = cfg["minimum"] * cfg["delay"] / cfg["workers"]
    return {"system": FLOOR, "first_batch_s": loading + imported, "import_distributed_s": imported}


def w1_consumer_alone(cfg: dict[str, Any]) -> Result:
    """The consumer fed batches already in memory: the best step rate and least wait it can
    measure on this machine (its own overhead and ``time.sleep``'s jitter)."""
    n = cfg["batch"]
    images = np.zeros((n, *IMAGE_SHAPE), np.float32)

    def epoch() -> Iterator[Result]:
        for i in range(cfg["rows"] // n):
            yield {"image": images, "sample_uid": np.arange(i * n, (i + 1) * n)}

    consumer = Consumer(step=cfg["step"])
    consumer.run(epoch, seconds=cfg["seconds"], start=time.perf_counter())
    summary = consumer.summary(cfg["capacity"])
    return {k: v for k, v in summary.items() if not any(w in k for w in ("first", "uids", "fresh"))}


def w1(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    rows = [_w1_variant(name, kwargs, cfg, scheduler) for name, kwargs in cfg["variants"].items()]
    rows.append({"system": "consumer alone (batches already in memory)", **w1_consumer_alone(cfg)})
    naive = peers.w1_naive_dask(cfg, scheduler)
    rows.append({"system": "naive dask loop", **naive, **ratios(FIRST_VS_FLOOR, FIRST_VS_LOADING)})
    for name, fn in (
        ("torch DataLoader", peers.w1_torch),
        ("MONAI SmartCache", peers.w1_monai),
        (f"torchdata.nodes ParallelMapper ({cfg['torchdata_method']}s)", peers.w1_torchdata),
    ):
        result = fn(cfg)
        first = {} if "note" in result else ratios(FIRST_VS_FLOOR, FIRST_VS_LOADING)
        rows.append({"system": name, **result, **first})
    rows.append(w1_floor(cfg))
    rows.append({"system": LOADING, "first_batch_s": cfg["minimum"] * cfg["delay"] / cfg["workers"]})
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


NUMPY_LIMIT = "numpy take(out=, clip) limit"
TO_NUMPY = ("ratio_to_numpy", "batches_per_s", NUMPY_LIMIT)


def _serving(system: str, served: int, seconds: float, batch_bytes: int) -> Result:
    return {
        "system": system,
        "batches_per_s": served / seconds,
        "GB_per_s": served * batch_bytes / seconds / 1e9,
    }


def _check_shape(batch: Any, size: int) -> None:
    if batch["image"].shape != (size, *IMAGE_SHAPE):
        raise RuntimeError(f"unexpected batch shape {batch['image'].shape}")


def _w2_paused(client: Any, cfg: dict[str, Any]) -> Result:
    n, batch = cfg["entries"], cfg["batch"]
    r = _full_reservoir(client, n, image_loader, batch_size=batch, rows_per_job=256, max_jobs_at_once=4)
    with r:
        served, seconds, last = _time_batches(r, cfg["batches"])
    _check_shape(last, batch)
    return {
        **_serving("dask_reservoir, loading paused", served, seconds, batch * IMAGE_BYTES),
        **ratios(TO_NUMPY),
    }


def _w2_under_load(client: Any, cfg: dict[str, Any], **kwargs: Any) -> Result:
    """Serve from a full reservoir of default settings (plus ``kwargs``) while its source (many
    times larger) keeps loading: entries are replaced in every epoch."""
    missing = unsupported(kwargs)
    label = (
        "dask_reservoir under load (defaults)"
        if not kwargs
        else f"dask_reservoir under load, {_kwargs_label(kwargs)}"
    )
    if missing:
        return {"system": label, "note": f"skipped: this AsyncReservoir does not accept {', '.join(missing)}"}
    n, batch = cfg["entries"], cfg["batch"]
    source = pd.DataFrame({"i": np.arange(n * cfg["source_factor"])})
    sampler = RandomSampler(seed=0)
    with AsyncReservoir(
        source,
        image_loader,
        n,
        min_reservoir_samples=n,
        client=client,
        batch_size=batch,
        reservoir_sampler=sampler,
        **kwargs,
    ) as r:
        t0 = time.perf_counter()
        iter(r)  # wait until full
        fill = time.perf_counter() - t0
        for _ in r:  # one warm epoch
            pass
        before = r.stats().entries_ingested
        served, seconds, last = _time_batches(r, cfg["batches"])
        ingested = r.stats().entries_ingested - before
    _check_shape(last, batch)
    row = _serving(label, served, seconds, batch * IMAGE_BYTES)
    return {**row, "entries_ingested_per_s": ingested / seconds, "fill_s": fill, **ratios(TO_NUMPY)}


def _w2_numpy(cfg: dict[str, Any]) -> list[Result]:
    """The limits: one ``take(out=)`` per batch from one array, and a stack of per-sample arrays."""
    n, batch, nbatches = cfg["entries"], cfg["batch"], cfg["batches"]
    store = np.random.default_rng(0).standard_normal((n, *IMAGE_SHAPE), dtype=np.float32)
    buf = np.empty((batch, *IMAGE_SHAPE), np.float32)
    rng = np.random.default_rng(1)
    idx = [rng.integers(0, n, batch) for _ in range(nbatches)]
    t0 = time.perf_counter()
    for i in idx:
        np.take(store, i, axis=0, out=buf, mode="clip")
    take = _serving(NUMPY_LIMIT, nbatches, time.perf_counter() - t0, batch * IMAGE_BYTES)
    samples = [store[i] for i in range(n)]
    t0 = time.perf_counter()
    for i in idx:
        np.stack([samples[j] for j in i])
    stack = _serving(
        "np.stack of per-sample arrays (trw-style)", nbatches, time.perf_counter() - t0, batch * IMAGE_BYTES
    )
    return [take, {**stack, **ratios(TO_NUMPY)}]


def w2(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    with local_cluster(2, scheduler) as client:
        paused = _w2_paused(client, cfg)
        loaded = _w2_under_load(client, cfg)
        in_process = _w2_under_load(client, cfg, loader="process")
    return [paused, loaded, in_process, *_w2_numpy(cfg)]


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


MONAI_FILL = "MONAI CacheDataset, 2 threads, tiny rows"


def _fill_variants(cfg: dict[str, Any], best: int | None) -> dict[str, dict[str, Any]]:
    """The settings W3 fills with, by label: defaults always; the tuned ones when ``best`` is set."""
    k = cfg["in_flight"]
    if best is None:
        return {"defaults": {}}
    return {
        "defaults": {},
        f"rows_per_job=1, {k} rows in flight": {"rows_per_job": 1, "max_jobs_at_once": k},
        f"packed rows_per_job={best}": {"rows_per_job": best, "max_jobs_at_once": 8},
        "rows_per_job='auto'": {"rows_per_job": "auto"},
    }


def _w3_kind(client: Any, cfg: dict[str, Any], name: str, loader: Any, best: int | None) -> list[Result]:
    """A raw dask loop and the reservoir's fill, for one kind of row."""
    k, seconds = cfg["in_flight"], cfg["seconds"]
    raw_label = f"raw dask loop, {name}, {k} in flight"
    rows: list[Result] = [{"system": raw_label, "samples_per_s": _raw_dask_rate(client, loader, k, seconds)}]
    variants = _fill_variants(cfg, best)
    if name == "tiny rows":  # what trw users pass: max_jobs_at_once counts tasks, it does not shrink them
        variants |= {f"max_jobs_at_once={j}": {"max_jobs_at_once": j} for j in cfg["max_jobs"]}
    for label, kwargs in variants.items():
        rate = _fill_rate(client, loader, cfg["rows"], seconds, **kwargs)
        specs = [("ratio_to_raw", "samples_per_s", raw_label)]
        if name == "tiny rows":
            specs.append(("ratio_to_monai", "samples_per_s", MONAI_FILL))
        rows.append({"system": f"dask_reservoir {label}, {name}", "samples_per_s": rate, **ratios(*specs)})
    return rows


def w3(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    results: list[Result] = []
    with local_cluster(2, scheduler) as client:
        for name, loader, best in (
            ("tiny rows", tiny_loader, cfg["best_tiny"]),
            ("49 KB rows", image_loader, cfg["best_image"]),
            ("1 ms rows", millisecond_loader, None),
        ):
            results += _w3_kind(client, cfg, name, loader, best)
    results.append({"system": MONAI_FILL, **peers.cache_dataset_fill(cfg["monai_rows"], 2)})
    return results


# ---------------------------------------------------------------- W4 scale
def _entries_label(n: int) -> str:
    return f"dask_reservoir, {n:.0e} entries"


def w4(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    results: list[Result] = []
    smallest = _entries_label(cfg["sizes"][0])
    with local_cluster(2, scheduler) as client:
        for n in cfg["sizes"]:
            r = _full_reservoir(client, n, tiny_loader, batch_size=64, rows_per_job=2048, max_jobs_at_once=8)
            with r:
                batches, seconds, _ = _time_batches(r, cfg["batches"])
            row = {"system": _entries_label(n), "us_per_batch": 1e6 * seconds / batches}
            results.append({**row, **ratios(("ratio_to_smallest", "us_per_batch", smallest))})
    return results


# ---------------------------------------------------------------- W5 memory
W5_ENTRIES: dict[str, tuple[Callable[[dict[str, Any]], Any], int]] = {
    # label -> (loader, bytes of its sample); the small entries first, so that the large
    # reservoir's freed memory does not serve the small one's growth
    "16 B": (sixteen_byte_loader, 16),
    "1 KB": (kb_loader, 1024),
}


def _w5_row(client: Any, n: int, label: str) -> Result:
    """RSS growth of this process for a full reservoir of ``n`` entries of one size.

    ``overhead_bytes_per_entry`` is what an entry costs beyond its sample's bytes (its UID,
    the reservoir's bookkeeping, the allocator's slack).
    """
    loader, size = W5_ENTRIES[label]
    gc.collect()
    base = rss_mb()
    r = _full_reservoir(client, n, loader, rows_per_job=2048, max_jobs_at_once=8)
    with r:
        held = rss_mb() - base
    raw = n * size / 2**20
    return {
        "system": f"dask_reservoir, {n:.0e} entries of {label}",
        "rss_growth_mb": held,
        "raw_mb": raw,
        "ratio": held / raw,
        "overhead_bytes_per_entry": (held - raw) * 2**20 / n,
    }


def w5(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    n = cfg["entries"]
    with local_cluster(2, scheduler) as client:
        with _full_reservoir(client, 256, sixteen_byte_loader, rows_per_job=2048, max_jobs_at_once=8):
            pass  # a first reservoir, unmeasured: what only the first one costs (imports, caches)
        rows = {label: _w5_row(client, n, label) for label in W5_ENTRIES}
    return [rows["1 KB"], rows["16 B"]]


# ---------------------------------------------------------------- W6 epoch start
def _iter_costs(r: AsyncReservoir, calls: int) -> Result:
    """Time ``iter(r)`` alone, ``calls`` times; each epoch serves one batch and a 5 ms step, then is dropped."""
    starts, ends, ingested = [], [], []
    for _ in range(calls):
        before = r.stats().entries_ingested
        t0 = time.perf_counter()
        it = iter(r)
        t1 = time.perf_counter()
        ingested.append(r.stats().entries_ingested - before)
        next(it)
        t2 = time.perf_counter()
        del it  # the epoch ends: its snapshot is released
        ends.append(time.perf_counter() - t2)
        starts.append(t1 - t0)
        time.sleep(W6_STEP)  # the training step: the builder prepares the next epoch's order meanwhile
    return {
        "iter_us_median": 1e6 * float(np.median(starts)),
        "iter_us_p90": 1e6 * float(np.percentile(starts, 90)),
        "epoch_end_us_median": 1e6 * float(np.median(ends)),
        "ingested_per_iter": float(np.mean(ingested)),
    }


W6_STEP = 0.005
"""Seconds of "training" after each W6 epoch's batch, as W1's step."""

W6_CHANGED = 64
"""Entries ingested per ``iter()`` at most in W6's epoch-start rows (``max_reservoir_replacement_size``)."""


def w6(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """``iter()`` on a full reservoir of tiny rows while loading goes on (a source twice its size).

    Two rows per size: at most ``W6_CHANGED`` entries enter per ``iter()`` (the epoch start
    proper, which should not grow with the reservoir), and every waiting entry enters
    (the epoch start plus ingestion, which grows with what arrived since the last epoch).
    """
    results: list[Result] = []
    with local_cluster(2, scheduler) as client:
        for n in cfg["sizes"]:
            for cap, what in (
                (W6_CHANGED, f"{W6_CHANGED} changed per epoch"),
                (None, "all waiting ingested"),
            ):
                source = pd.DataFrame({"i": np.arange(2 * n)})
                with AsyncReservoir(
                    source,
                    tiny_loader,
                    n,
                    min_reservoir_samples=n,
                    client=client,
                    batch_size=64,
                    reservoir_sampler=RandomSampler(seed=0),
                    rows_per_job=2048,
                    max_jobs_at_once=8,
                    max_reservoir_replacement_size=cap,
                ) as r:
                    iter(r)  # wait until full
                    label = f"{_entries_label(n)}, {what}"
                    results.append({"system": label, **_iter_costs(r, cfg["calls"])})
    return results


# ---------------------------------------------------------------- W7 resume
def _w7_reservoir(client: Any, cfg: dict[str, Any]) -> AsyncReservoir:
    source = pd.DataFrame({"delay": np.full(cfg["rows"], cfg["delay"])})
    return AsyncReservoir(
        source,
        slow_image_loader,
        cfg["reservoir"],
        min_reservoir_samples=cfg["minimum"],
        client=client,
        batch_size=32,
        reservoir_sampler=RandomSampler(seed=0),
    )


def _w7_start(r: AsyncReservoir, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` to the first batch, and until the reservoir is full again."""
    next(iter(r))
    first = time.perf_counter() - t0
    deadline = time.monotonic() + 120
    while r.reservoir_size() < r.stats().max_reservoir_samples and time.monotonic() < deadline:
        for _ in r:
            pass
        time.sleep(0.01)
    return {"first_batch_s": first, "full_s": time.perf_counter() - t0}


def w7(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """Resume: ``restore()`` from a saved state against a cold start of the same reservoir.

    The state holds no sample data: a restored reservoir loads its former members again
    (first), so its refill costs what a cold start's does; what it keeps is the epoch
    numbering, the source order, and which samples the reservoir holds.
    """
    with local_cluster(cfg["workers"], scheduler) as client:
        t0 = time.perf_counter()
        with _w7_reservoir(client, cfg) as r:
            cold = _w7_start(r, t0)
            for _ in range(cfg["epochs"]):
                for _ in r:
                    pass
            state = r.state_dict()
        members = {m["uid"] for m in state["members"]}
        t0 = time.perf_counter()
        with _w7_reservoir(client, cfg) as r:
            r.load_state_dict(state)
            restored = _w7_start(r, t0)
            now = {int(e) for b in r for e in b["sample_uid"]}
    return [
        {"system": "cold start", **cold},
        {
            "system": "restore() from state_dict()",
            **restored,
            "served_from_former_members": len(now & members) / max(1, len(now)),
            **ratios(
                ("first_batch_vs_cold", "first_batch_s", "cold start"),
                ("full_vs_cold", "full_s", "cold start"),
            ),
        },
    ]


# ---------------------------------------------------------------- W8 client CPU per ingested entry
W8_ROWS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    # label -> (function, extra AsyncReservoir keyword arguments)
    "row function, rows_per_job=2048": (tiny_loader, {"rows_per_job": 2048, "max_jobs_at_once": 8}),
    "row function, defaults": (tiny_loader, {}),
    "batched=True, rows_per_job=2048": (
        tiny_batched,
        {"batched": True, "rows_per_job": 2048, "max_jobs_at_once": 8},
    ),
}


def _w8_row(client: Any, cfg: dict[str, Any], function: Any, options: dict[str, Any]) -> Result:
    """Client CPU per entry ingested while a full reservoir of tiny entries keeps loading.

    The consumer starts an epoch, takes one batch and drops it, then sleeps 5 ms (a step),
    for ``seconds``; every ``iter()`` ingests what arrived meanwhile.
    """
    n = cfg["entries"]
    source = pd.DataFrame({"i": np.arange(2 * n)})
    with AsyncReservoir(
        source,
        function,
        n,
        min_reservoir_samples=n,
        client=client,
        batch_size=64,
        reservoir_sampler=RandomSampler(seed=0),
        **options,
    ) as r:
        iter(r)  # wait until full
        before = r.stats().entries_ingested
        cpu0 = process_cpu_seconds()
        t0 = time.perf_counter()
        iters = []
        while time.perf_counter() - t0 < cfg["seconds"]:
            t1 = time.perf_counter()
            it = iter(r)
            iters.append(time.perf_counter() - t1)
            next(it)
            del it
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        cpu = process_cpu_seconds() - cpu0
        ingested = r.stats().entries_ingested - before
    return {
        "cpu_us_per_entry": 1e6 * cpu / ingested if ingested else float("nan"),
        "entries_per_s": ingested / wall,
        "iter_ms_median": 1e3 * float(np.median(iters)),
        "client_cpu_cores": cpu / wall,
    }


def w8(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """CPU seconds of this process (the client: all its threads) per entry ingested.

    The scheduler and workers run in other processes (not a LocalCluster, whose scheduler
    runs in this one and would count).
    """
    with subprocess_cluster(2, scheduler) as client:
        return [
            {"system": label, **_w8_row(client, cfg, function, options)}
            for label, (function, options) in W8_ROWS.items()
        ]


# ---------------------------------------------------------------- W9 state at scale
W9_CAPACITY = 1000


def _w9_uids(kind: str, n: int) -> Any:
    if kind == "int64":
        return np.arange(n)
    return pd.array([f"u{i}" for i in range(n)], dtype="string[pyarrow]")


def _w9_reservoir(client: Any, source: pd.DataFrame) -> AsyncReservoir:
    return AsyncReservoir(
        source,
        tiny_loader,
        W9_CAPACITY,
        min_reservoir_samples=W9_CAPACITY,
        client=client,
        rows_per_job=256,
        batch_size=64,
        source_sampler=RandomSampler(seed=3),
    )


def _w9_state(client: Any, source: pd.DataFrame, settle: float) -> Result:
    """Time ``state_dict()`` (first call), ``save()`` and, in a second reservoir on the same
    source, ``load_state_dict()`` of that state after a JSON round trip; RSS growth in MB."""
    with _w9_reservoir(client, source) as r:
        iter(r)
        gc.collect()
        m0, t0 = rss_mb(), time.perf_counter()
        state = r.state_dict()
        state_dict_s, state_dict_rss = time.perf_counter() - t0, rss_mb() - m0
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            path = r.save(Path(folder) / "state.json")
            save_s = time.perf_counter() - t0
            state_mb = path.stat().st_size / 2**20
    state = json.loads(json.dumps(state))
    with _w9_reservoir(client, source) as r:
        time.sleep(settle)  # the reservoir's start-up work is done
        gc.collect()
        m0, t0 = rss_mb(), time.perf_counter()
        r.load_state_dict(state)
        load_s, load_rss = time.perf_counter() - t0, rss_mb() - m0
    return {
        "state_dict_s": state_dict_s,
        "save_s": save_s,
        "load_state_dict_s": load_s,
        "state_dict_rss_mb": state_dict_rss,
        "load_rss_mb": load_rss,
        "state_mb": state_mb,
    }


W9_KINDS = {"int64": "int64 UIDs", "string[pyarrow]": "Arrow string UIDs"}


def w9_label(kind: str, n: int) -> str:
    return f"{W9_KINDS[kind]}, {n:.0e} rows"


def w9(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """``state_dict()``, ``save()`` and ``load_state_dict()`` of a 1000-entry reservoir over a
    source of ``uids`` rows, once with int64 UIDs and once with Arrow strings."""
    n = cfg["uids"]
    results: list[Result] = []
    with local_cluster(2, scheduler) as client:
        for kind in W9_KINDS:
            source = pd.DataFrame({"sample_uid": _w9_uids(kind, n)})
            results.append({"system": w9_label(kind, n), **_w9_state(client, source, cfg["settle"])})
            del source
    return results
