"""to_tensors and require_torch (pure; torch installed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dask_reservoir._core.tensors import require_torch, to_tensors

torch = pytest.importorskip("torch")


def test_require_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require_torch() is torch
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(
        ImportError, match=r"needs PyTorch; install it with `pip install dask_reservoir\[torch\]`"
    ):
        require_torch()


def test_every_numeric_column_becomes_a_tensor() -> None:
    batch = {
        "s": np.array(["a", "b"]),  # first, so a loop stopping at it would be seen
        "b": np.array([True, False]),
        "i": np.array([1, 2], np.int16),
        "u": np.array([1, 2], np.uint8),
        "f": np.array([0.5, 1.5]),
        "c": np.array([1 + 2j, 3j]),
        "o": np.array([{"k": 1}, None], dtype=object),
    }
    out = to_tensors(batch)
    assert out["s"] is batch["s"] and out["o"] is batch["o"]
    assert {k for k, v in out.items() if isinstance(v, torch.Tensor)} == {"b", "i", "u", "f", "c"}
    assert out["i"].dtype == torch.int16 and out["b"].tolist() == [True, False]


def test_writable_native_arrays_are_shared_others_copied() -> None:
    shared = np.arange(3, dtype=np.float32)
    out = to_tensors({"x": shared})
    shared[0] = 9.0
    assert out["x"][0].item() == 9.0  # zero-copy
    frozen = np.arange(3, dtype=np.float32)
    frozen.flags.writeable = False
    t = to_tensors({"x": frozen})["x"]
    t[0] = 5.0  # a copy: writing it leaves the read-only array alone
    assert frozen[0] == 0.0
    swapped = np.array([1, 256], dtype=">i4")
    assert to_tensors({"x": swapped})["x"].tolist() == [1, 256]


def test_device_moves_and_errors_name_the_column() -> None:
    arr = np.arange(3, dtype=np.float64)
    out = to_tensors({"x": arr}, device="meta")
    assert out["x"].device.type == "meta"
    assert to_tensors({"x": arr})["x"].device.type == "cpu"
    reversed_view = np.arange(3, dtype=np.float32)[::-1]  # negative strides: torch refuses them
    with pytest.raises(
        TypeError, match=r"^column 'w': cannot turn a numpy array of dtype float32 and shape \(3,\)"
    ):
        to_tensors({"w": reversed_view})
