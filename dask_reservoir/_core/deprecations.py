"""What changed or goes away, announced with a ``FutureWarning`` (CHANGELOG.md, "Version policy").

Each warning names the release that changed it, the release that drops the warning or the old
behaviour, and what to do instead; it points at the user's line, not at dask_reservoir's.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from types import FrameType

__all__ = ["UNTIL", "max_jobs_meaning", "old_state_version", "user_stacklevel", "warn_future"]

UNTIL = "0.3"
"""The release that drops what these warnings announce."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` of the user's line, for ``warnings.warn`` in the caller.

    The frame just outside the outermost frame of dask_reservoir: wrappers between the
    package's own frames (a decorator, ``functools``, a test tool's trampolines) are skipped.

    Examples
    --------
    >>> user_stacklevel()  # called from outside the package: the caller's own line
    1
    """
    frame: FrameType | None = sys._getframe(1)  # the caller: stacklevel 1
    level, outermost = 1, 0
    while frame is not None:
        if os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
            outermost = level
        frame = frame.f_back
        level += 1
    return outermost + 1


def max_jobs_meaning(max_jobs_at_once: int | None, rows_per_job: int | None) -> str | None:
    """The ``FutureWarning`` for a ``max_jobs_at_once`` whose meaning changed in 0.2, if any.

    0.1 counted source rows; 0.2 counts dask tasks, as trw's parameter does.  The two differ
    only when both are given and a task holds more than one row.

    Examples
    --------
    >>> max_jobs_meaning(8, 1) is None and max_jobs_meaning(None, 4) is None
    True
    >>> print(max_jobs_meaning(10, 4))  # doctest: +NORMALIZE_WHITESPACE
    max_jobs_at_once=10 counts dask tasks since dask_reservoir 0.2 (0.1 counted source rows): with
    rows_per_job=4 it allows up to 40 rows in flight. For 0.1's bound of 10 rows pass
    max_jobs_at_once=3; r.max_rows_at_once gives the bound in rows. This warning goes in 0.3.
    """
    if max_jobs_at_once is None or rows_per_job is None or rows_per_job == 1:
        return None
    old = max(1, math.ceil(max_jobs_at_once / rows_per_job))
    return (
        f"max_jobs_at_once={max_jobs_at_once} counts dask tasks since dask_reservoir 0.2 (0.1 counted "
        f"source rows): with rows_per_job={rows_per_job} it allows up to {max_jobs_at_once * rows_per_job} "
        f"rows in flight. For 0.1's bound of {max_jobs_at_once} rows pass max_jobs_at_once={old}; "
        f"r.max_rows_at_once gives the bound in rows. This warning goes in {UNTIL}."
    )


def old_state_version(version: int, current: int) -> str | None:
    """The ``FutureWarning`` for a state of an older format version, if ``version`` is one.

    Examples
    --------
    >>> old_state_version(3, 3) is None
    True
    >>> print(old_state_version(1, 3))  # doctest: +NORMALIZE_WHITESPACE
    the state has format version 1, read until dask_reservoir 0.3; save it again (state_dict() or
    save()) to write version 3
    """
    if version >= current:
        return None
    return (
        f"the state has format version {version}, read until dask_reservoir {UNTIL}; save it again "
        f"(state_dict() or save()) to write version {current}"
    )


def warn_future(message: str | None) -> None:
    """Issue ``message`` (when there is one) as a ``FutureWarning`` at the user's line."""
    if message is not None:
        warnings.warn(message, FutureWarning, stacklevel=user_stacklevel())
