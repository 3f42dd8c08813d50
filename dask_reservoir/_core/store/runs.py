"""Finished rows into the store: runs of one column block at once, the others one by one.

Pure code with no threads and no dask.  What the ledger hands over (finished rows,
:class:`~dask_reservoir._core.records.Completed`) and what callers build
(:class:`~dask_reservoir._core.store.entry.Entry`) share the fields :func:`put_all` reads.
A run of items whose one row each lives in the same
:class:`~dask_reservoir._core.blocks.ColumnBlock` (a finished task) is stored with one
:meth:`~dask_reservoir._core.store.store.ReservoirStore.put_block`: no ``Entry`` per item.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import numpy as np

from dask_reservoir._core.blocks import BlockRow, CompletedBlock
from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.room import NoRoomError
from dask_reservoir._core.store.table import StoreError

__all__ = ["Finished", "block_run", "put_all"]


class Finished(Protocol):
    """A finished source row: what :func:`put_all` reads of an item."""

    @property
    def uid(self) -> Hashable: ...

    @property
    def position(self) -> int: ...

    @property
    def rows(self) -> tuple[Any, ...]: ...

    @property
    def loaded_at(self) -> float: ...

    @property
    def load_seconds(self) -> float: ...


class _Store(Protocol):
    capacity: int

    def put(self, entry: Entry) -> list[Entry]: ...

    def put_block(
        self,
        positions: np.ndarray,
        uids: list[Hashable],
        block: Any,
        rows: np.ndarray,
        *,
        loaded_at: np.ndarray,
        load_seconds: np.ndarray,
    ) -> bool: ...


def block_run(items: Sequence[Finished], start: int, limit: int) -> tuple[int, Any]:
    """The run of items from ``start`` whose one row each lives in the same block: its end and the block.

    At most ``limit`` items; ``(start + 1, None)`` when the row of ``items[start]`` is
    not from a block.

    Examples
    --------
    >>> from dask_reservoir._core.blocks import ColumnBlock
    >>> block = ColumnBlock({"x": np.arange(3)})
    >>> items = [Entry(i, i, (BlockRow(block, i),)) for i in range(3)] + [Entry(3, 3, ({"x": 3},))]
    >>> block_run(items, 0, limit=2)[0], block_run(items, 1, limit=5)[0], block_run(items, 3, limit=5)
    (2, 3, (4, None))
    """
    block = _single_block(items[start])
    end = start + 1
    if block is not None:
        while end < len(items) and end - start < limit and _single_block(items[end]) is block:
            end += 1
    return end, block


def _single_block(item: Finished) -> Any:
    """The block holding the one row of ``item``, or None."""
    rows = item.rows
    return rows[0].block if len(rows) == 1 and type(rows[0]) is BlockRow else None


def put_all(
    store: _Store, items: Sequence[Finished | CompletedBlock]
) -> tuple[int, list[tuple[Finished, StoreError]]]:
    """Put ``items`` in order; the entries stored, and the items that could not be, with why.

    A task's rows waiting as one :class:`~dask_reservoir._core.blocks.CompletedBlock`, and runs
    of items from one block, go in with one ``put_block`` each (at most ``capacity`` at a
    time); an item not from a block, or a run that cannot be written at once, goes in
    alone (an item with no rows stores nothing).  :class:`~dask_reservoir._core.store.room.NoRoomError`
    and ``ValueError`` propagate as from ``put``.
    """
    stored = 0
    rows: list[Finished] = []
    rejected: list[tuple[Finished, StoreError]] = []
    for item in items:
        if isinstance(item, CompletedBlock):
            if rows:  # in order: the rows before it first
                done, refused = _put_rows(store, rows)
                stored, rows = stored + done, []
                rejected.extend(refused)
            done, left = _put_blocks(store, item)
            stored += done
            if left:  # what did not go in at once: row by row, without trying a block again
                done, refused = _put_rows(store, left, blocks=False)
                stored += done
                rejected.extend(refused)
        else:
            rows.append(item)
    done, refused = _put_rows(store, rows)
    return stored + done, rejected + refused


def _put_rows(
    store: _Store, items: Sequence[Finished], *, blocks: bool = True
) -> tuple[int, list[tuple[Finished, StoreError]]]:
    """:func:`put_all` of items that are each one finished row (``blocks``: runs of one block at once)."""
    rejected: list[tuple[Finished, StoreError]] = []
    stored = 0
    i = 0
    while i < len(items):
        end, block = block_run(items, i, store.capacity) if blocks else (i + 1, None)
        run = items[i:end]
        i = end
        count = len(run)
        if block is not None and store.put_block(
            np.fromiter((item.position for item in run), np.int64, count=count),
            [item.uid for item in run],
            block,
            np.fromiter((item.rows[0].at for item in run), np.intp, count=count),
            loaded_at=np.fromiter((item.loaded_at for item in run), float, count=count),
            load_seconds=np.fromiter((item.load_seconds for item in run), float, count=count),
        ):
            stored += count
            continue
        for item in run:  # not from a block, or not written at once: each alone
            if not item.rows:
                continue
            try:
                store.put(Entry(item.uid, item.position, item.rows, item.loaded_at, item.load_seconds))
                stored += 1
            except StoreError as exc:
                rejected.append((item, exc))
            except NoRoomError:
                raise  # the caller stops here: the rest waits for room
            except Exception as exc:  # never a stall: whatever the store cannot hold is that UID's failure
                error = StoreError(
                    f"cannot store the entry of UID {item.uid!r}: {type(exc).__name__}: {exc}", uid=item.uid
                )
                rejected.append((item, error))
    return stored, rejected


def _put_blocks(store: _Store, item: CompletedBlock) -> tuple[int, list[Finished]]:
    """Put a task's block in pieces of at most ``capacity``; the entries stored and the rows left."""
    stored = 0
    rest = item
    while len(rest):
        piece, rest = rest.split(store.capacity)
        if not store.put_block(
            piece.positions,
            piece.uids,
            piece.block,
            piece.rows,
            loaded_at=np.full(len(piece), piece.loaded_at),
            load_seconds=piece.load_seconds,
        ):
            left: list[Finished] = [*piece.items(), *rest.items()]
            return stored, left
        stored += len(piece)
    return stored, []
