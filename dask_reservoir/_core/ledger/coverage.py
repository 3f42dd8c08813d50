"""Coverage of the source: per row position, whether its job came back, and whether it loaded rows.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger` calls it
under its condition.  One byte per source row in two arrays, updated a job at a time with
numpy: a source of ten million rows costs 20 MB here, where sets of the UIDs tried and
loaded cost about a gigabyte of Python objects.  Rows whose last result had no rows are
few; they are kept by UID, for the error that names them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["Coverage"]


class Coverage:
    """Per source row: tried (its job came back), loaded (it gave rows), or its last result empty.

    Parameters
    ----------
    rows : int
        Rows of the source.

    Examples
    --------
    >>> coverage = Coverage(4)
    >>> coverage.tried(np.array([0, 1, 2]))
    >>> coverage.loaded(np.array([0, 1, 2]), ["a", "b", "c"], np.array([2, 0, 1]))
    >>> coverage.tried_count, coverage.loaded_count, coverage.unloadable()
    (3, 2, {'b'})
    >>> coverage.loaded(np.array([1]), ["b"], np.array([1]))  # b gives rows at last
    >>> coverage.loaded_count, coverage.unloadable()
    (3, set())
    """

    def __init__(self, rows: int) -> None:
        self._tried = np.zeros(rows, bool)
        self._loaded = np.zeros(rows, bool)
        self._empty_at = np.zeros(rows, bool)  # its last result had no rows
        self._tried_count = 0
        self._loaded_count = 0
        self._empty: dict[int, Hashable] = {}  # position -> UID of the rows of _empty_at

    def tried(self, positions: np.ndarray) -> None:
        """The jobs of these rows (distinct positions) came back: loaded, failed, or reported otherwise."""
        self._tried_count += _set(self._tried, positions)

    def loaded(self, positions: np.ndarray, uids: Sequence[Hashable], counts: np.ndarray) -> None:
        """Rows ``positions`` (distinct; UIDs ``uids``) loaded, ``counts[i]`` produced rows each (0: none)."""
        with_rows = counts > 0
        self._loaded_count += _set(self._loaded, positions[with_rows])
        ended = np.flatnonzero(with_rows & self._empty_at[positions])  # rows at last: usually none
        for i in ended.tolist():
            self._empty.pop(int(positions[i]), None)
        self._empty_at[positions[ended]] = False
        for i in np.flatnonzero(~with_rows).tolist():  # no rows: usually none
            self._empty[int(positions[i])] = uids[i]
            self._empty_at[positions[i]] = True

    def skipped(self, positions: np.ndarray) -> None:
        """These rows (distinct) were not submitted in the first pass: their entries are loaded already."""
        self.tried(positions)
        self._loaded_count += _set(self._loaded, positions)

    def unloaded(self, position: int) -> None:
        """The store could not keep the row's entry: it no longer counts as loaded."""
        if self._loaded[position]:
            self._loaded[position] = False
            self._loaded_count -= 1

    def unloadable(self) -> set[Hashable]:
        """UIDs whose last result had no rows and that never loaded rows (or lost them to the store)."""
        return {uid for position, uid in self._empty.items() if not self._loaded[position]}

    @property
    def tried_count(self) -> int:
        """Rows whose job came back at least once (or skipped as loaded)."""
        return self._tried_count

    @property
    def loaded_count(self) -> int:
        """Rows that loaded rows (and whose entry the store did not reject since)."""
        return self._loaded_count

    def __repr__(self) -> str:
        return (
            f"<Coverage: rows={len(self._tried)} tried={self._tried_count} loaded={self._loaded_count} "
            f"empty={len(self._empty)}>"
        )


def _set(flags: np.ndarray, positions: np.ndarray) -> int:
    """Set ``flags[positions]`` (distinct positions); return how many were not set before."""
    if not len(positions):
        return 0
    new = int(len(positions) - np.count_nonzero(flags[positions]))
    flags[positions] = True
    return new
