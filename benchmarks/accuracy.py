"""W12 time to accuracy: wall time from building the loader to 95 % held-out accuracy on digits.

scikit-learn's bundled digits (1,797 8x8 images; 20 % held out, stratified, seed 0), a
64-128-10 MLP trained with Adam on the CPU (one torch thread), batches of 32, the held-out
accuracy evaluated every ``eval_every`` steps.  The same loader feeds every system: it
sleeps 5 ms (a slow read) and returns the image (float32, /16) and its label; the same
augmentation, a random one-pixel shift per sample, is applied at every serve.

- every sample already in memory (numpy arrays, shuffled batches, the shift in the loop): the limit;
- the reservoir (capacity 400, minimum 64) with ``transform=`` (the shift in its batch thread);
- a torch ``DataLoader`` over a Dataset calling the loader, 2 worker processes;
- MONAI ``SmartCacheDataset`` (cache 400) with the loader as a cached transform and the shift
  as a random one.

The model is initialised from the same seed for every system; the clock starts when the
loader is built (the cluster is started, and warmed up, before).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import Result, local_cluster, ratios
from dask_reservoir import AsyncReservoir, RandomSampler

PIXELS = [f"p{i}" for i in range(64)]
IN_MEMORY = "every sample in memory (numpy), shift in the loop"
RESERVOIR = "dask_reservoir transform=shift, max_reservoir_samples=400, min 64"
TORCH = "torch DataLoader, num_workers=2, shift in the Dataset"
MONAI = "MONAI SmartCacheDataset, cache 400, replace_rate={rate}"
VS_MEMORY = ("vs_in_memory", "time_to_target_s", IN_MEMORY)


def load_digit(row: dict[str, Any]) -> dict[str, Any]:
    """W12's loader: sleep ``row["delay"]`` seconds, return the 8x8 image and its label."""
    time.sleep(float(row["delay"]))
    image = np.array([row[p] for p in PIXELS], dtype=np.float32).reshape(8, 8)
    return {"image": image, "label": np.int64(row["label"])}


def shift(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The augmentation: roll the image by -1, 0 or 1 pixel along each axis."""
    dy, dx = rng.integers(-1, 2, size=2)
    sample["image"] = np.roll(sample["image"], (int(dy), int(dx)), axis=(0, 1))
    return sample


def _digits(delay: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The training rows (a source: pixels, label, delay) and the held-out images and labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    source = pd.DataFrame(images[train].reshape(len(train), 64), columns=PIXELS)
    source.insert(0, "sample_uid", train.astype(np.int64))
    source["label"] = labels[train]
    source["delay"] = delay
    return source, images[test], labels[test]


def _train(
    batches: Callable[[], Iterator[tuple[Any, Any]]],
    test: tuple[np.ndarray, np.ndarray],
    cfg: dict[str, Any],
    start: float,
) -> Result:
    """Train a fresh model on epochs of ``batches()`` until the target accuracy or the cap."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    x_test = torch.as_tensor(test[0]).reshape(len(test[0]), 64)
    y_test = torch.as_tensor(test[1])
    steps, best, first, waited = 0, 0.0, float("nan"), 0.0
    deadline = start + cfg["cap"]
    mark = start  # the end of the previous step: the wait for a batch counts from there
    while True:
        for images, labels in batches():
            now = time.perf_counter()
            waited += now - mark
            if steps == 0:
                first = now - start
            x = torch.as_tensor(images, dtype=torch.float32).reshape(len(images), 64)
            loss = nn.functional.cross_entropy(model(x), torch.as_tensor(labels, dtype=torch.int64))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % cfg["eval_every"] == 0:
                with torch.no_grad():
                    accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
                best = max(best, accuracy)
                if accuracy >= cfg["target"]:
                    seconds = time.perf_counter() - start
                    return _trained(seconds, steps, best, first, waited)
            mark = time.perf_counter()
            if mark >= deadline:
                return _trained(float("inf"), steps, best, first, waited)


def _trained(seconds: float, steps: int, best: float, first: float, waited: float) -> Result:
    """``time_to_target_s`` is inf when the cap came first (so that medians over repeats order it);
    ``wait_s``: time spent waiting for batches (the first one included)."""
    return {
        "time_to_target_s": seconds,
        "steps": steps,
        "best_accuracy": best,
        "first_batch_s": first,
        "wait_s": waited,
        "ms_per_step": 1e3 * seconds / steps if np.isfinite(seconds) else float("nan"),
    }


def _warm_torch(test: tuple[np.ndarray, np.ndarray], cfg: dict[str, Any]) -> None:
    """One unmeasured step and evaluation: torch's first-call costs (lazy imports, allocations)."""
    one = [(test[0][: cfg["batch"]], test[1][: cfg["batch"]])]
    _train(lambda: iter(one), test, {**cfg, "cap": 0.0, "eval_every": 1}, time.perf_counter())


def _in_memory(source: pd.DataFrame, test: Any, cfg: dict[str, Any]) -> Result:
    images = source[PIXELS].to_numpy(np.float32).reshape(len(source), 8, 8)
    labels = source["label"].to_numpy()
    rng = np.random.default_rng(0)
    batch = cfg["batch"]
    start = time.perf_counter()

    def epoch() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = rng.permutation(len(labels))
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            shifted = [shift({"image": images[j]}, rng)["image"] for j in idx]
            yield np.stack(shifted), labels[idx]

    return _train(epoch, test, cfg, start)


def _reservoir(client: Any, source: pd.DataFrame, test: Any, cfg: dict[str, Any]) -> Result:
    start = time.perf_counter()
    with AsyncReservoir(
        source,
        load_digit,
        cfg["reservoir"],
        min_reservoir_samples=cfg["minimum"],
        client=client,
        batch_size=cfg["batch"],
        reservoir_sampler=RandomSampler(seed=0),
        transform=shift,
        transform_seed=0,
    ) as r:

        def epoch() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for b in r:
                yield b["image"], b["label"]

        result = _train(epoch, test, cfg, start)
        stats = r.stats()
    return {**result, "rows_loaded": stats.rows_loaded}


def _seed_worker(worker_id: int) -> None:
    """Each DataLoader worker's shift generator, from the loader's seeded generator."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


def _torch(source: pd.DataFrame, test: Any, cfg: dict[str, Any]) -> Result:
    try:
        import torch
        from torch.utils.data import DataLoader, Dataset
    except ImportError:
        return {"note": "skipped: torch not installed (pip install dask_reservoir[bench])"}
    rows = source.to_dict("records")

    class Digits(Dataset):
        rng = np.random.default_rng(0)

        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
            sample = shift(load_digit(rows[i]), self.rng)
            return sample["image"], sample["label"]

    start = time.perf_counter()
    loader = DataLoader(
        Digits(),
        batch_size=cfg["batch"],
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(0),
    )
    try:
        return _train(loader.__iter__, test, cfg, start)
    finally:
        del loader


def _monai(source: pd.DataFrame, test: Any, cfg: dict[str, Any]) -> Result:
    try:
        from monai.data import DataLoader, SmartCacheDataset
        from monai.transforms import Compose, RandomizableTransform, Transform
    except ImportError:
        return {"note": "skipped: monai not installed (pip install 'monai>=1.3')"}
    rows = source.to_dict("records")

    class Load(Transform):  # deterministic: SmartCacheDataset caches its output
        def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
            return load_digit(row)

    class Shift(RandomizableTransform):  # random: applied at every serve, after the cache
        def __init__(self) -> None:
            super().__init__(prob=1.0)
            self.rng = np.random.default_rng(0)

        def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
            return shift(dict(sample), self.rng)

    start = time.perf_counter()
    ds = SmartCacheDataset(
        data=rows,
        transform=Compose([Load(), Shift()]),
        cache_num=cfg["reservoir"],
        replace_rate=cfg["replace_rate"],
        num_init_workers=2,
        num_replace_workers=2,
        progress=False,
        shuffle=True,
        seed=0,
    )
    loader = DataLoader(ds, batch_size=cfg["batch"], shuffle=True, num_workers=0)
    ds.start()

    def epoch() -> Iterator[tuple[Any, Any]]:
        for b in loader:
            yield b["image"], b["label"]
        ds.update_cache()

    try:
        return _train(epoch, test, cfg, start)
    finally:
        ds.shutdown()


def _warm_up(client: Any, source: pd.DataFrame) -> None:
    """An unmeasured reservoir of a few rows: what only the cluster's first one costs (imports)."""
    with AsyncReservoir(source.head(8), load_digit, 8, passes=1, client=client) as r:
        r.wait_loaded(timeout=120)


def w12(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    monai = MONAI.format(rate=cfg["replace_rate"])
    try:
        import sklearn  # noqa: F401 - the digits
        import torch
    except ImportError as e:
        note = {"note": f"skipped: {e.name} not installed (pip install dask_reservoir[bench])"}
        return [{"system": name, **note} for name in (IN_MEMORY, RESERVOIR, TORCH, monai)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source, *held_out = _digits(cfg["delay"])
        test = (held_out[0], held_out[1])
        _warm_torch(test, cfg)
        rows: list[Result] = [{"system": IN_MEMORY, **_in_memory(source, test, cfg)}]
        with local_cluster(2, scheduler) as client:
            _warm_up(client, source)
            rows.append({"system": RESERVOIR, **_reservoir(client, source, test, cfg), **ratios(VS_MEMORY)})
        if not cfg["peers"]:
            skipped = {"note": "skipped in the quick suite"}
            return [*rows, {"system": TORCH, **skipped}, {"system": monai, **skipped}]
        for name, result in ((TORCH, _torch(source, test, cfg)), (monai, _monai(source, test, cfg))):
            rows.append({"system": name, **result, **({} if "note" in result else ratios(VS_MEMORY))})
        return rows
    finally:
        torch.set_num_threads(threads)
