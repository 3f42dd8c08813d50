"""What the store takes of a put: rows checked and typed, the table they go in, the layout kept.

Pure code with no threads and no dask.  :class:`Admission` holds the store's rules
for rows (``columnar``, ``uid_column``, ``uid_type``, ``stackable``) and what they
remember: the layout every stored row has (a ``stackable`` store) and the columns
whose change of dtype or shape was already reported.  The store calls it before
changing anything, so that a put it refuses leaves the store as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import BlockRow
from dask_reservoir._core.deprecations import user_stacklevel
from dask_reservoir._core.store.entry import Entry, Row
from dask_reservoir._core.store.layout import (
    Layout,
    block_layout,
    check_rows,
    servable_block,
    stackable_layout,
)
from dask_reservoir._core.store.table import Column, SlotTable

__all__ = ["Admission"]


class Admission:
    """The store's rules for the rows it takes, and what they remember.

    Parameters
    ----------
    columnar : bool, keyword-only
        Keep fixed-shape single-row entries in a columnar slot table.
    uid_column : str, keyword-only
        The column of each row holding its entry's UID.
    uid_type : type, optional, keyword-only
        The numpy scalar type UIDs are stored as in ``uid_column``; None: as given.
    stackable : bool, keyword-only
        Refuse a row that the default collate could not stack with the stored ones.

    Attributes
    ----------
    layout : dict or None
        With ``stackable``, what every stored row looks like (None: the store is empty).

    Examples
    --------
    >>> admission = Admission(columnar=True, uid_column="uid", uid_type=np.int64, stackable=True)
    >>> entry = Entry(3, 0, ({"uid": 3, "x": np.zeros(2)},))
    >>> admission.prepare(entry)
    >>> type(entry.rows[0]["uid"]).__name__
    'int64'
    >>> admission.took(admission.stackable_layout(entry, alone=True, holder=None))
    >>> admission.layout
    {'uid': None, 'x': ((2,), 'number')}
    >>> admission.table_for(entry, None, size=4).columns["x"].describe()
    'float64 array of shape (2,)'
    """

    def __init__(
        self, *, columnar: bool, uid_column: str, uid_type: Callable[[Any], Any] | None, stackable: bool
    ) -> None:
        self.columnar = columnar
        self.uid_column = uid_column
        self.uid_type = uid_type
        self.stackable = stackable
        self.layout: Layout | None = None
        self._warned: set[str] = set()  # columns whose change was reported

    def prepare(self, entry: Entry) -> None:
        """Check the rows of ``entry`` (``StoreError``) and make them dicts with typed UIDs.

        Before the store's lock: changes ``entry.rows`` only (new tuples and dicts).
        """
        if any(type(row) is BlockRow for row in entry.rows):
            entry.rows = tuple(row.as_dict() if type(row) is BlockRow else row for row in entry.rows)
        check_rows(entry.uid, entry.rows)
        if self.uid_type is not None:
            entry.rows = tuple(self._typed_uid(row) for row in entry.rows)

    def _typed_uid(self, row: Row) -> Row:
        """``row`` with its UID column as ``uid_type`` (a new dict; the row itself is the caller's)."""
        uid = row.get(self.uid_column)
        if uid is None or self.uid_type is None:
            return row
        return {**row, self.uid_column: self.uid_type(uid)}

    def stackable_layout(self, entry: Entry, *, alone: bool, holder: Hashable) -> Layout | None:
        """Raise ``StoreError`` when a row of ``entry`` would not stack with the stored rows.

        Returns the layout to keep once the put is done when it leaves no other entry
        (``alone``; None: the layout stays).  See
        :func:`~dask_reservoir._core.store.layout.stackable_layout`.
        """
        return stackable_layout(entry, self.layout, alone=alone, holder=holder)

    def took(self, layout: Layout | None) -> None:
        """A put is done: keep ``layout`` (from :meth:`stackable_layout`) unless it is None."""
        if layout is not None:
            self.layout = layout

    def table_for(self, entry: Entry, table: SlotTable | None, *, size: int) -> SlotTable | None:
        """The table the entry's row goes in (``table``, a new one for the first row), or None.

        Warns once per column when the row changes a column's dtype or shape (the
        entry is then kept as rows).  Called by the store's ``put()``: the warning
        points at ``put()``'s caller.
        """
        if not self.columnar or len(entry.rows) != 1:
            return None
        row = entry.rows[0]
        if table is None:
            return SlotTable.infer(row, size)
        if table.fits(row):
            return table
        for change in table.changes(row):
            column, old, new = change
            if column not in self._warned:
                self._warned.add(column)
                warnings.warn(
                    f"column {column!r} changed from {old} to {new} at UID {entry.uid!r}: entries unlike "
                    "the first stored row are kept as rows and collated per batch (slower), and batches "
                    "mixing them change dtype or fail to stack; return one dtype and shape per column "
                    "(warned once per column: later changes of this column are not reported)",
                    UserWarning,
                    stacklevel=user_stacklevel(),  # the user's iter() or next(), whatever the path
                )
        return None

    def block(
        self, uids: Sequence[Hashable], block: Any, rows: np.ndarray
    ) -> tuple[dict[str, Column], Layout] | None:
        """The schema and layout of writing rows ``rows`` of ``block`` (UIDs ``uids``) at once.

        None when they cannot be written at once (not columnar, not slottable, or a
        value the store would refuse alone); the store then puts them one by one.
        The block's UIDs are converted to ``uid_type`` in place.
        """
        if not self.columnar:
            return None
        uid_values = block.columns.get(self.uid_column)
        if self.uid_type is not None and uid_values is not None:
            wanted = np.dtype(cast(Any, self.uid_type))
            if uid_values.dtype != wanted:  # the chunk's UIDs, checked equal to the source's
                block.columns[self.uid_column] = uid_values.astype(wanted)
            block.python = block.python - {self.uid_column}  # stored as uid_type, as put() does
        schema = SlotTable.block_columns(block.columns, block.python)
        if schema is None:
            return None
        layout = block_layout(block.columns)
        if not servable_block(uids, block.columns, rows, stackable=self.stackable):
            return None
        return schema, layout

    def fits_block(self, layout: Layout) -> bool:
        """Whether rows of ``layout`` stack with the stored rows (always, unless ``stackable``)."""
        return not self.stackable or self.layout in (None, layout)

    def took_block(self, layout: Layout) -> None:
        """A block write is done: a ``stackable`` store that was empty keeps ``layout``."""
        if self.stackable and self.layout is None:
            self.layout = layout

    def clear(self) -> None:
        """The store is emptied: the next put sets the layout."""
        self.layout = None

    def __repr__(self) -> str:
        return (
            f"<Admission: columnar={self.columnar} uid_column={self.uid_column!r} "
            f"stackable={self.stackable} layout={'set' if self.layout is not None else 'none'}>"
        )
