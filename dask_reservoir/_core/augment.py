"""The ``transform=`` stage: fresh augmentation of each served sample, with its own seed stream.

Pure code, no threads.  A :class:`ServeTransform` binds the user's ``transform`` to a
seed; :meth:`ServeTransform.for_epoch` gives the epoch's :class:`EpochTransform`, which
the batch builder calls once per batch.  Each batch draws from
``numpy.random.SeedSequence(seed, spawn_key=(epoch, start))``, ``start`` being the
batch's first place in the epoch's order: a batch built again (after a drop) is
augmented the same way, and a run with the same seeds and ``deterministic=True`` is
reproduced exactly, whatever the threads' timing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from dask_reservoir._core.uid_index import same_uid

__all__ = ["EpochTransform", "ServeTransform"]

STREAM = 0x7472616E  # "tran": this stream's first spawn key, apart from the samplers' streams


class ServeTransform:
    """The user's ``transform`` and its seed.

    Parameters
    ----------
    function : callable
        ``function(sample, rng) -> sample``, or with ``batched`` ``function(batch, rng) -> batch``.
    batched : bool
        Whether ``function`` takes whole batches.
    seed : int
        Entropy of the generators (``transform_seed``, or drawn once per reservoir).
    uid_column : str
        The column that must come back unchanged.

    Examples
    --------
    >>> def jitter(sample, rng):
    ...     return {**sample, "x": sample["x"] + rng.integers(0, 100)}
    >>> t = ServeTransform(jitter, batched=False, seed=7, uid_column="uid")
    >>> rows = [{"uid": 1, "x": 0}, {"uid": 2, "x": 0}]
    >>> first = t.for_epoch(0).rows(rows, start=0)
    >>> first == t.for_epoch(0).rows(rows, start=0), first == t.for_epoch(1).rows(rows, start=0)
    (True, False)
    """

    def __init__(
        self,
        function: Callable[[Any, np.random.Generator], Any],
        *,
        batched: bool,
        seed: int,
        uid_column: str,
    ) -> None:
        self.function = function
        self.batched = batched
        self.seed = int(seed)
        self.uid_column = uid_column

    def for_epoch(self, epoch: int) -> EpochTransform:
        """The transform of epoch ``epoch``."""
        return EpochTransform(self, epoch)

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"<ServeTransform: {name} batched={self.batched} seed={self.seed}>"


class EpochTransform:
    """``transform`` for one epoch: applied to the rows, or the batch, starting at a place in its order."""

    def __init__(self, transform: ServeTransform, epoch: int) -> None:
        self._t = transform
        self.epoch = int(epoch)

    @property
    def batched(self) -> bool:
        """Whether it applies to whole batches (after collation)."""
        return self._t.batched

    def rng(self, start: int) -> np.random.Generator:
        """The generator of the batch starting at place ``start`` of the epoch's order."""
        sequence = np.random.SeedSequence(self._t.seed, spawn_key=(STREAM, self.epoch, int(start)))
        return np.random.default_rng(sequence)

    def rows(self, rows: list[dict[str, Any]], *, start: int) -> list[dict[str, Any]]:
        """Each row transformed (rows are the caller's private copies), in order, with one generator.

        Raises
        ------
        TypeError
            When ``transform`` returns something else than a dict (naming the UID).
        ValueError
            When it changes the UID column (naming both UIDs).
        """
        rng = self.rng(start)
        column = self._t.uid_column
        out: list[dict[str, Any]] = []
        for row in rows:
            uid = row.get(column)
            new = self._t.function(row, rng)
            if not isinstance(new, dict):
                raise TypeError(
                    f"transform must return the sample as a dict of column -> value, got "
                    f"{type(new).__name__} for UID {uid!r}"
                )
            _check_uid(new.get(column, uid), uid, column)
            new[column] = uid
            out.append(new)
        return out

    def batch(self, batch: Any, *, start: int) -> Any:
        """The batch transformed (``transform_batched=True``); its UID column must come back unchanged."""
        column = self._t.uid_column
        uids = batch.get(column) if isinstance(batch, dict) else None
        new = self._t.function(batch, self.rng(start))
        if uids is not None:
            if not isinstance(new, dict):
                raise TypeError(
                    f"transform (transform_batched=True) must return the batch as a dict of column -> "
                    f"array, got {type(new).__name__}"
                )
            back: Any = new.get(column, uids)
            if len(back) != len(uids) or not np.array_equal(np.asarray(back), np.asarray(uids)):
                raise ValueError(
                    f"transform (transform_batched=True) changed the UID column {column!r}: it must keep "
                    f"the batch's rows and their order, got UIDs {list(back)[:5]!r} for {list(uids)[:5]!r}"
                )
            new[column] = uids
        return new


def _check_uid(got: Hashable, uid: Hashable, column: str) -> None:
    if got is not uid and not same_uid(got, uid):
        raise ValueError(
            f"transform changed the UID column {column!r} of UID {uid!r} to {got!r}: the UID names "
            "the sample and must come back unchanged"
        )
