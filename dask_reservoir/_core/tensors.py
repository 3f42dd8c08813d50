"""numpy batches as torch tensors; torch is imported when first needed.

The optional torch extra: :func:`require_torch` raises an ``ImportError`` naming the extra,
:func:`to_tensors` converts one batch.  :mod:`dask_reservoir.torch` re-exports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TORCH_MISSING", "require_torch", "to_tensors"]

TORCH_MISSING = (
    "dask_reservoir.torch needs PyTorch; install it with `pip install dask_reservoir[torch]` "
    "(or follow https://pytorch.org/get-started) to proceed"
)


def require_torch() -> Any:
    """The ``torch`` module, or an ``ImportError`` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(TORCH_MISSING) from exc
    return torch


def to_tensors(
    batch: dict[str, np.ndarray],
    *,
    device: Any = None,
    pin_memory: bool = False,
    non_blocking: bool = False,
) -> dict[str, Any]:
    """Turn a batch of numpy arrays into torch tensors.

    Numeric and bool arrays become tensors sharing memory with the array
    (``torch.from_numpy``, zero-copy) unless ``device``/``pin_memory`` ask for a
    copy; read-only arrays and arrays in non-native byte order are copied first
    (torch needs writable, native-order memory).  An array torch cannot take raises
    ``TypeError`` naming the column.
    ``str``/``object`` columns (UIDs that are strings, say) stay numpy arrays.

    Parameters
    ----------
    batch : dict of str to numpy.ndarray
        A batch from ``AsyncReservoir``.
    device : str or torch.device, optional
        Move the tensors there (``"cuda"``, ``"cpu"``).
    pin_memory : bool
        Page-lock the tensors (faster host-to-GPU copies); needs an accelerator.
    non_blocking : bool
        Passed to ``Tensor.to`` when moving to ``device``.

    Examples
    --------
    >>> import numpy as np
    >>> out = to_tensors({"x": np.ones((2, 3), np.float32), "name": np.array(["a", "b"])})
    >>> out["x"].shape, out["x"].dtype, out["name"].tolist()
    (torch.Size([2, 3]), torch.float32, ['a', 'b'])
    """
    torch = require_torch()
    out: dict[str, Any] = {}
    for name, value in batch.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            out[name] = value
            continue
        array = value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))
        try:
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"column {name!r}: cannot turn a numpy array of dtype {array.dtype} and shape "
                f"{array.shape} into a torch tensor: {exc}"
            ) from exc
        if pin_memory:
            tensor = tensor.pin_memory()
        if device is not None:
            tensor = tensor.to(device, non_blocking=non_blocking)
        out[name] = tensor
    return out
