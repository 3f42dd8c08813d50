"""What a row must be to be stored, and to stack with the stored rows; read-only views of stored data.

Pure functions, no threads and no dask.  The store refuses (``StoreError``) a row that
is not a dict, or holds a value no batch could be built from without sharing or breaking
it (:func:`check_servable`).  A store made with ``stackable=True`` also refuses a row
whose :func:`layout_of` (columns, array shapes and kinds) differs from the stored rows'
(:func:`stackable_layout`).  What the store keeps of a row is never written again:
:func:`frozen_row` and :func:`read_only` make its arrays read-only.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from typing import cast

import numpy as np

from dask_reservoir._core.collate import dtype_family, is_immutable
from dask_reservoir._core.store.entry import Entry, Row
from dask_reservoir._core.store.table import StoreError

__all__ = [
    "Layout",
    "block_layout",
    "check_rows",
    "check_servable",
    "frozen_row",
    "layout_of",
    "read_only",
    "servable_block",
    "stackable_layout",
]

Layout = dict[str, tuple[tuple[int, ...], str] | None]
"""Per column: the shape and dtype family of its arrays, or None for values that are not arrays."""


def layout_of(row: Row) -> Layout:
    """What the default collate needs alike in every row of a batch: columns, array shapes and kinds.

    Examples
    --------
    >>> layout_of({"x": np.zeros((2, 3)), "label": 1, "name": "a"})
    {'x': ((2, 3), 'number'), 'label': None, 'name': None}
    """
    return {
        k: (v.shape, dtype_family(v.dtype)) if isinstance(v, np.ndarray) else None for k, v in row.items()
    }


def block_layout(columns: dict[str, np.ndarray]) -> Layout:
    """The :func:`layout_of` each row of a column block has (one row per index of the first axis).

    Examples
    --------
    >>> block_layout({"x": np.zeros((4, 2), np.float32), "label": np.arange(4)})
    {'x': ((2,), 'number'), 'label': None}
    """
    return {
        name: (values.shape[1:], dtype_family(values.dtype))
        if values.ndim > 1 and values.dtype != object
        else None
        for name, values in columns.items()
    }


def check_servable(uid: Hashable, column: str, value: object) -> None:
    """Refuse a value a batch could not be built from without sharing or breaking it.

    Mutable objects are deep-copied into every batch (so users cannot change what is
    stored): one that cannot be deep-copied (a lock, a file handle) is refused here,
    once, rather than failing every epoch.  ``numpy.matrix`` cannot be stacked along a
    new axis (it stays 2-D).

    Examples
    --------
    >>> check_servable("a", "x", [1, 2])  # deep-copied into every batch: fine
    >>> import threading
    >>> try:
    ...     check_servable("a", "x", threading.Lock())
    ... except StoreError as exc:
    ...     print(exc.uid, exc.column, exc.dtype)
    a x lock
    """
    if isinstance(value, np.matrix):
        raise StoreError(
            f"column {column!r} holds a numpy.matrix for UID {uid!r}, which cannot be stacked into a "
            "batch; return an ndarray (numpy.asarray)",
            uid=uid,
            column=column,
            dtype="numpy.matrix",
        )
    if is_immutable(value) or (type(value) is np.ndarray and value.dtype != object):
        return
    try:
        copy.deepcopy(value)
    except Exception as exc:
        raise StoreError(
            f"column {column!r} holds a {type(value).__name__} for UID {uid!r} that cannot be "
            f"deep-copied ({type(exc).__name__}: {exc}); batches copy mutable values so that "
            "users cannot change what is stored: return plain data instead (numbers, str, "
            "arrays, or objects that can be copied)",
            uid=uid,
            column=column,
            dtype=type(value).__name__,
        ) from exc


def check_rows(uid: Hashable, rows: Sequence[object]) -> None:
    """Refuse (``StoreError``) rows that are not dicts, or hold a value :func:`check_servable` refuses.

    Examples
    --------
    >>> check_rows(7, [{"x": 1}, ("x", 1)])
    Traceback (most recent call last):
    ...
    dask_reservoir._core.store.table.StoreError: each row of an entry must be a dict, got tuple at index 1 for UID 7
    """
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StoreError(
                f"each row of an entry must be a dict, got {type(row).__name__} at index {i} for UID {uid!r}",
                uid=uid,
            )
        for column, value in row.items():
            check_servable(uid, column, value)


def servable_block(
    uids: Sequence[Hashable], columns: dict[str, np.ndarray], rows: np.ndarray, *, stackable: bool
) -> bool:
    """Whether rows ``rows`` of a block (UIDs ``uids``) may be written at once.

    False when a value of an object column is refused by :func:`check_servable`, or, with
    ``stackable``, is an array (whose shape only a put of its row alone checks): the
    store then puts the rows one by one, so that only those that cannot be stored fail.
    """
    for name, values in columns.items():
        if values.dtype != object:
            continue
        try:
            for uid, value in zip(uids, values[rows].tolist(), strict=True):
                check_servable(uid, name, value)
                if stackable and isinstance(value, np.ndarray):
                    return False
        except StoreError:
            return False
    return True


def stackable_layout(entry: Entry, stored: Layout | None, *, alone: bool, holder: Hashable) -> Layout | None:
    """Raise ``StoreError`` when a row of ``entry`` would not stack with the stored rows.

    ``stored`` is the layout of the stored rows; ``alone`` says that the put leaves no
    other entry in the store (an empty store takes any row).  Returns the layout the
    store takes then (None: it keeps ``stored``).  ``holder`` is a UID whose rows set
    the layout, for the message.

    Examples
    --------
    >>> stored = layout_of({"x": np.zeros(2)})
    >>> stackable_layout(Entry(1, 1, ({"x": np.ones(2)},)), stored, alone=False, holder=0) is None
    True
    >>> stackable_layout(Entry(1, 1, ({"x": np.ones(3)},)), stored, alone=False, holder=0)
    Traceback (most recent call last):
    ...
    dask_reservoir._core.store.table.StoreError: column 'x' holds an array of shape (3,) for UID 1 but the stored rows (UID 0 among them) hold an array of shape (2,): rows must be alike to be stacked into a batch (return one shape and kind of values per column, or pad in a collate_fn)
    >>> stackable_layout(Entry(1, 1, ({"x": np.ones(3)},)), stored, alone=True, holder=0)
    {'x': ((3,), 'number')}
    """
    layout = layout_of(entry.rows[0]) if alone else None
    expected = stored if layout is None else layout
    for row in entry.rows:
        found = layout_of(row)
        if found != expected:
            raise _unstackable(entry, found, cast(Layout, expected), holder)
    return layout


def _unstackable(entry: Entry, found: Layout, expected: Layout, holder: Hashable) -> StoreError:
    """The error of a row that would not stack with the stored rows (naming the UID and column)."""
    kept = f" (UID {holder!r} among them)" if holder is not None else ""
    extra = [c for c in found if c not in expected]
    missing = [c for c in expected if c not in found]
    if extra or missing:
        column = (extra or missing)[0]
        return StoreError(
            f"UID {entry.uid!r} has columns {list(found)!r} but the stored rows{kept} have "
            f"{list(expected)!r}: every row must have the same columns to be collated into "
            "a batch (a collate_fn may take rows of any columns)",
            uid=entry.uid,
            column=column,
        )
    column = next(c for c in found if found[c] != expected[c])

    def what(array: tuple[tuple[int, ...], str] | None) -> str:
        if array is None:
            return "a value that is not an array"
        shape, family = array
        kinds = {a[1] for a in (found[column], expected[column]) if a is not None}
        return f"an array of shape {shape}" + (f" and {family} values" if len(kinds) > 1 else "")

    return StoreError(
        f"column {column!r} holds {what(found[column])} for UID {entry.uid!r} but the stored rows"
        f"{kept} hold {what(expected[column])}: rows must be alike to be stacked into a batch "
        "(return one shape and kind of values per column, or pad in a collate_fn)",
        uid=entry.uid,
        column=column,
        dtype=what(found[column]),
    )


def read_only(array: np.ndarray) -> np.ndarray:
    """``array`` itself, made read-only (for arrays the caller owns, such as those shared with snapshots).

    Examples
    --------
    >>> read_only(np.zeros(2)).flags.writeable
    False
    """
    array.flags.writeable = False
    return array


def frozen_row(row: Row) -> Row:
    """A new dict of ``row`` whose arrays are read-only (the store's own view of the row).

    The flags of the caller's arrays are never changed: on a threaded cluster they are
    the function's own (a buffer it may fill again).  A writeable array is kept as a
    read-only view, without a copy: what tasks hand over is theirs to keep (a task run in
    the client's process copies its results, see :class:`~dask_reservoir._worker.calls.TaskOptions`).

    Examples
    --------
    >>> mine = np.zeros(2)
    >>> kept = frozen_row({"x": mine, "label": 1})
    >>> kept["x"].flags.writeable, mine.flags.writeable, np.shares_memory(kept["x"], mine)
    (False, True, True)
    """
    return {
        k: _read_only_view(v) if isinstance(v, np.ndarray) and v.flags.writeable else v
        for k, v in row.items()
    }


def _read_only_view(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
