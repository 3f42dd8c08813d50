"""A dask DataFrame source: partitions persisted for the reservoir, rows read on the workers.

The frame is never collected to the client: it is persisted once, under keys
unique to the reservoir (nothing else can cancel them), its UIDs and partition
lengths are read from those persisted partitions, and the jobs read their rows
from the same partitions on the workers
(:func:`~dask_reservoir._source.pandas_source.partition_records`), so UIDs and rows always
match.  The only futures outside the runner are those persisted partitions,
held by :class:`DaskSource` and released (never cancelled) by the runner at close.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dask_reservoir._core.etiquette import Placement
from dask_reservoir._core.uid_index import UidIndex, validate_uids
from dask_reservoir._source.pandas_source import Source, check_columns

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client, Future

__all__ = ["DaskSource", "persist_partitions"]


def _identity(part: pd.DataFrame) -> pd.DataFrame:
    return part


def _describe(part: pd.DataFrame, uid_column: str | None) -> tuple[int, list[Any] | None]:
    """Length and UIDs of one persisted partition (run on a worker)."""
    return len(part), None if uid_column is None else part[uid_column].tolist()


def _column(part: pd.DataFrame, name: str) -> list[Any]:
    return list(part[name].tolist())


def _client_of(scheduler: Any) -> Client:
    from distributed import Client, default_client

    return scheduler if isinstance(scheduler, Client) else default_client()


def persist_partitions(
    frame: dd.DataFrame,
    client: Client,
    indices: Sequence[int] | None = None,
    *,
    placement: Placement | None = None,
) -> list[Future]:
    """Persist ``frame`` (or its partitions ``indices``) under keys no one else uses.

    Returns one future per partition, in partition order.  Its tasks carry the reservoir's
    etiquette (``placement``): priority, resources, workers and annotations.
    """
    import dask
    from distributed import futures_of

    placement = placement or Placement()
    token = f"dask_reservoir-part-{uuid.uuid4().hex}"
    selected = frame if indices is None else frame.partitions[list(indices)]
    collection = selected.map_partitions(_identity, token=token)
    if placement.annotations:
        # Annotations apply when the graph is sent: Client.persist merges them into the tasks'.
        # The collection it builds from the futures warns that they are ignored on its expression.
        # (The filters are the process's: only done when there are annotations to silence.)
        with warnings.catch_warnings(), dask.annotate(**placement.annotations):
            warnings.filterwarnings("ignore", message="Dask annotations .* detected", category=UserWarning)
            persisted = client.persist(collection, **placement.submit_kwargs())
    else:
        persisted = client.persist(collection, **placement.submit_kwargs())
    futures = sorted(futures_of(persisted), key=lambda f: f.key[1] if isinstance(f.key, tuple) else 0)
    return list(futures)


def _run_on_parts(
    client: Client, function: Any, parts: Sequence[Future], *args: Any, placement: Placement
) -> list[Any]:
    import dask

    tag = uuid.uuid4().hex
    with dask.annotate(**placement.annotations):
        futures = [
            client.submit(
                function,
                part,
                *args,
                key=f"dask_reservoir-read-{tag}-{i}",
                pure=False,
                **placement.submit_kwargs(),
            )
            for i, part in enumerate(parts)
        ]
    try:
        return list(client.gather(futures))
    finally:
        client.cancel(futures)  # our own keys: nothing else depends on them


@dataclass
class DaskSource(Source):
    """A dask source; rows stay on the workers, in partitions persisted for this source.

    ``rows[i]`` is ``(partition, offset)`` of row ``i``; ``parts[p]`` the future of
    partition ``p``, held by this object (a :meth:`subset` holds its own references
    to the same keys).  :meth:`release` drops them.
    """

    frame: dd.DataFrame = None  # type: ignore[assignment]
    rows: list[tuple[int, int]] = None  # type: ignore[assignment]
    lengths: list[int] = None  # type: ignore[assignment]
    parts: list[Future] = None  # type: ignore[assignment]
    has_uid_column: bool = False
    placement: Placement = field(default_factory=Placement)
    """The reservoir's etiquette, on the tasks that persist and read the partitions."""

    @property
    def columns(self) -> list[str]:
        """Column names of the source."""
        return [str(c) for c in self.frame.columns]

    @property
    def client(self) -> Client:
        """The client holding the persisted partitions."""
        return self.parts[0].client

    def column_values(self, name: str, *, scheduler: Any = None) -> list[Any]:
        """Values of column ``name``, read from the persisted partitions (only that column travels)."""
        per_part = _run_on_parts(self.client, _column, self.parts, name, placement=self.placement)
        return [per_part[part][offset] for part, offset in self.rows]

    def renew_partitions(self, indices: Sequence[int]) -> None:
        """Persist partitions ``indices`` again under fresh keys (theirs were lost or cancelled)."""
        fresh = persist_partitions(self.frame, self.client, indices, placement=self.placement)
        for index, future in zip(indices, fresh, strict=True):
            old, self.parts[index] = self.parts[index], future
            old.release()

    def release(self) -> None:
        """Release (never cancel) this object's references to the partitions; idempotent."""
        parts, self.parts = self.parts, []
        for future in parts:
            future.release()

    def subset(self, positions: Sequence[int]) -> DaskSource:
        """A view holding rows ``positions``, in that order (same partitions, own references)."""
        from distributed import Future

        positions = list(positions)
        return DaskSource(
            uids=UidIndex(self.uid_index.values[np.asarray(positions, dtype=np.intp)]),  # its dtype kept
            uid_column=self.uid_column,
            frame=self.frame,
            rows=[self.rows[p] for p in positions],
            lengths=self.lengths,
            parts=[Future(f.key, f.client) for f in self.parts],
            has_uid_column=self.has_uid_column,
            placement=self.placement,
        )


def dask_source_from(
    ddf: dd.DataFrame, uid_column: str, scheduler: Any, placement: Placement | None = None
) -> DaskSource:
    check_columns(list(ddf.columns))
    client = _client_of(scheduler)
    placement = placement or Placement()
    has_uid = uid_column in ddf.columns
    parts = persist_partitions(ddf, client, placement=placement)
    try:
        described = _run_on_parts(
            client, _describe, parts, uid_column if has_uid else None, placement=placement
        )
        lengths = [int(n) for n, _ in described]
        if sum(lengths) == 0:
            raise ValueError("source must hold at least one row, got an empty dask DataFrame")
        if has_uid:
            uid_list: Any = [u for _, part_uids in described for u in part_uids or ()]
            dtype = ddf[uid_column].dtype
            if isinstance(dtype, np.dtype) and dtype.kind == "u":  # unsigned (hashes): not int64 or objects
                uid_list = pd.Series(uid_list, dtype=dtype)
        else:
            uid_list = list(range(sum(lengths)))
        uids = validate_uids(uid_list, uid_column)
    except BaseException:
        for future in parts:
            future.release()
        raise
    rows = [(p, off) for p, n in enumerate(lengths) for off in range(n)]
    return DaskSource(
        uids=uids,
        uid_column=uid_column,
        frame=ddf,
        rows=rows,
        lengths=lengths,
        parts=parts,
        has_uid_column=has_uid,
        placement=placement,
    )
