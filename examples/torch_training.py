"""Train a PyTorch model from a reservoir through the torch adapter.

Run: ``python examples/torch_training.py`` (needs ``pip install dask_reservoir[torch]``;
without torch it says so and exits cleanly).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, RandomSampler


def load_image(row: dict[str, Any]) -> dict[str, Any]:
    """Slow loading of a small image whose class is its brightness."""
    time.sleep(0.005)
    label = row["sample_uid"] % 2
    rng = np.random.default_rng(row["sample_uid"])
    image = rng.normal(0.8 if label else 0.2, 0.3, size=(1, 16, 16)).astype(np.float32)
    return {"image": image, "label": np.int64(label)}


def main() -> int:
    try:
        from dask_reservoir.torch import ReservoirDataset  # says how to install PyTorch when it is missing
    except ImportError as exc:
        print(f"skipped: {exc}")
        return 0
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    source = pd.DataFrame({"path": [f"img_{i}.png" for i in range(400)]})
    with AsyncReservoir(
        source,
        load_image,
        128,
        min_reservoir_samples=64,
        nb_workers=2,
        batch_size=32,
        reservoir_sampler=RandomSampler(seed=0),
        timeout=120,
    ) as reservoir:
        loader = DataLoader(ReservoirDataset(reservoir), batch_size=None, num_workers=0)
        for epoch in range(8):
            total = correct = 0
            for batch in loader:
                logits = model(batch["image"])
                loss = torch.nn.functional.cross_entropy(logits, batch["label"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                correct += int((logits.argmax(1) == batch["label"]).sum())
                total += len(batch["label"])
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, accuracy {correct / total:.2f}")
        print(f"stats: {reservoir.stats().summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
