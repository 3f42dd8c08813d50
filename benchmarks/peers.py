"""Peers of W1, fed the same loader and consumer: a naive dask loop, torch DataLoader, MONAI SmartCache."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import Consumer, PeakRSS, local_cluster, slow_image_loader

Result = dict[str, Any]


def _rows(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"sample_uid": i, "delay": cfg["delay"]} for i in range(cfg["rows"])]


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
                yield {
                    "image": np.stack([s["image"] for s in samples]),
                    "label": np.array([s["label"] for s in samples]),
                    "sample_uid": order[i : i + cfg["batch"]],
                }

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
