"""Peers, fed the same loaders: W1's consumer (naive dask loop, torch DataLoader, MONAI SmartCache,
torchdata.nodes) and W3's fill of tiny rows (MONAI CacheDataset)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import Consumer, PeakRSS, Result, local_cluster, slow_image_loader, tiny_loader

TORCHDATA_MISSING = "skipped: pip install torchdata==0.11.0"
MONAI_MISSING = "skipped: monai not installed (pip install 'monai>=1.3')"


def _rows(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"sample_uid": i, "delay": cfg["delay"]} for i in range(cfg["rows"])]


def _collate(samples: list[dict[str, Any]], uids: Any) -> dict[str, Any]:
    return {
        "image": np.stack([s["image"] for s in samples]),
        "label": np.array([s["label"] for s in samples]),
        "sample_uid": np.asarray(uids),
    }


def w1_naive_dask(cfg: dict[str, Any], scheduler: str | None) -> Result:
    """Per batch: submit the batch's rows, gather, train (what many users write first)."""
    rows = _rows(cfg)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"])
    with PeakRSS() as mem, local_cluster(cfg["workers"], scheduler) as client:

        def epoch() -> Any:
            order = rng.permutation(len(rows))
            for i in range(0, len(order) - cfg["batch"] + 1, cfg["batch"]):
                futures = client.map(
                    slow_image_loader, [rows[j] for j in order[i : i + cfg["batch"]]], pure=False
                )
                samples = client.gather(futures)
                del futures
                yield _collate(samples, order[i : i + cfg["batch"]])

        consumer.run(epoch, seconds=cfg["seconds"], start=start)
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def w1_torch(cfg: dict[str, Any]) -> Result:
    try:
        import torch
        from torch.utils.data import DataLoader, Dataset
    except ImportError:
        return {"note": "skipped: torch not installed (pip install dask_reservoir[bench])"}
    rows = _rows(cfg)

    class Rows(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {**slow_image_loader(rows[i]), "sample_uid": i}

    torch.manual_seed(0)
    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"])
    with PeakRSS() as mem:
        loader = DataLoader(
            Rows(), batch_size=cfg["batch"], shuffle=True, num_workers=cfg["workers"], persistent_workers=True
        )
        consumer.run(loader.__iter__, seconds=cfg["seconds"], start=start)
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def w1_monai(cfg: dict[str, Any]) -> Result:
    try:
        from monai.data import DataLoader, SmartCacheDataset
    except ImportError:
        return {"note": "skipped: monai not installed (pip install dask_reservoir[bench])"}
    rows = _rows(cfg)

    def transform(row: dict[str, Any]) -> dict[str, Any]:
        return {**slow_image_loader(row), "sample_uid": row["sample_uid"]}

    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"])
    with PeakRSS() as mem:
        ds = SmartCacheDataset(
            data=rows,
            transform=transform,
            cache_num=cfg["reservoir"],
            replace_rate=0.25,
            num_init_workers=cfg["workers"],
            num_replace_workers=cfg["workers"],
            progress=False,
            shuffle=True,
            seed=0,
        )
        loader = DataLoader(ds, batch_size=cfg["batch"], shuffle=True, num_workers=0)
        ds.start()

        def epoch() -> Any:
            yield from loader
            ds.update_cache()

        try:
            consumer.run(epoch, seconds=cfg["seconds"], start=start)
        finally:
            ds.shutdown()
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def w1_torchdata(cfg: dict[str, Any]) -> Result:
    """torchdata.nodes: ParallelMapper (threads: the loader sleeps without the GIL) + Batcher +
    a collating Mapper, prefetched in a background thread, under a Loader."""
    try:
        import torch
        from torchdata import nodes
    except ImportError:
        return {"note": TORCHDATA_MISSING}
    rows = _rows(cfg)

    def load(i: int) -> dict[str, Any]:
        return {**slow_image_loader(rows[i]), "sample_uid": i}

    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return _collate(samples, [s["sample_uid"] for s in samples])

    sampler = torch.utils.data.RandomSampler(range(len(rows)), generator=torch.Generator().manual_seed(0))
    node: Any = nodes.SamplerWrapper(sampler)
    node = nodes.ParallelMapper(node, load, num_workers=cfg["workers"], method=cfg["torchdata_method"])
    node = nodes.Batcher(node, batch_size=cfg["batch"], drop_last=True)
    node = nodes.Prefetcher(nodes.Mapper(node, collate), prefetch_factor=2)
    start = time.perf_counter()
    consumer = Consumer(step=cfg["step"])
    with PeakRSS() as mem:
        loader = nodes.Loader(node)
        consumer.run(loader.__iter__, seconds=cfg["seconds"], start=start)
    return {**consumer.summary(cfg["capacity"]), "peak_rss_mb": mem.peak_mb}


def cache_dataset_fill(rows: int, workers: int) -> Result:
    """Rows per second of building a MONAI ``CacheDataset`` of tiny rows with ``workers`` threads."""
    try:
        from monai.data import CacheDataset
        from monai.transforms import Transform
    except ImportError:
        return {"note": MONAI_MISSING}

    class Load(Transform):  # a Transform: CacheDataset caches only up to the first non-Transform
        def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
            return tiny_loader(data)

    data = [{"sample_uid": i} for i in range(rows)]
    t0 = time.perf_counter()
    ds = CacheDataset(data, Load(), cache_rate=1.0, num_workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    cache = getattr(ds, "_cache", None)
    if cache is not None and (len(cache) != rows or cache[-1] != {"x": rows - 1}):
        raise RuntimeError("CacheDataset did not cache the loaded rows")
    return {"samples_per_s": rows / seconds}
