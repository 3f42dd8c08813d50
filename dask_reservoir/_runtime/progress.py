"""Progress while ``iter()`` waits for the minimum: a tqdm bar, or plain lines without tqdm.

Pure code with no threads: the reservoir calls :meth:`WaitProgress.update` from
its waiting loop.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["WaitProgress"]

LINE_PERIOD = 2.0
"""Seconds between plain progress lines when tqdm is not installed."""


DESCRIPTION = "dask_reservoir loading"
"""The bar's description while samples load."""


class WaitProgress:
    """Report ``loaded / required`` entries while waiting, and why nothing loads yet.

    Parameters
    ----------
    required : int
        Entries waited for.
    enabled : bool
        False: report nothing.
    stream : file, optional
        Where plain lines go (default ``sys.stderr``).
    goal : str
        What is waited for, in the plain lines.
    unit : str
        What is counted.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> p = WaitProgress(4, enabled=True, stream=out, use_tqdm=False)
    >>> p.update(1); p.update(4); p.close()
    >>> print(out.getvalue().strip())
    dask_reservoir: 1/4 samples loaded, waiting for the minimum
    dask_reservoir: 4/4 samples loaded
    >>> out = io.StringIO()
    >>> p = WaitProgress(4, enabled=True, stream=out, use_tqdm=False)
    >>> p.update(0, note="starting the cluster"); p.update(0); p.close()
    >>> print(out.getvalue().strip())
    dask_reservoir: 0/4 samples loaded, waiting for the minimum: starting the cluster
    dask_reservoir: 0/4 samples loaded, waiting for the minimum
    dask_reservoir: 0/4 samples loaded
    """

    def __init__(
        self,
        required: int,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        use_tqdm: bool = True,
        goal: str = "the minimum",
        unit: str = "samples",
    ) -> None:
        self.required = required
        self._goal, self._unit = goal, unit
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._bar: Any = None
        self._last_line = float("-inf")
        self._printed = False
        self._loaded = 0
        self._note: str | None = None
        if enabled and use_tqdm:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=required, desc=DESCRIPTION, unit=unit.rstrip("s"), leave=False)

    def update(self, loaded: int, *, note: str | None = None) -> None:
        """Show that ``loaded`` entries are in the reservoir.

        Parameters
        ----------
        loaded : int
            Entries in the reservoir now.
        note : str, optional
            Why nothing loads yet (``"starting the cluster"``, ``"waiting for workers"``):
            the bar's description, or appended to the plain line, until a call without it.
        """
        if not self.enabled:
            return
        loaded = min(loaded, self.required)
        self._loaded = loaded
        changed, self._note = note != self._note, note
        if self._bar is not None:
            if changed:
                self._bar.set_description(f"dask_reservoir: {note}" if note else DESCRIPTION, refresh=False)
            self._bar.update(loaded - self._bar.n)
            if changed:
                self._bar.refresh()
            return
        now = time.monotonic()
        if changed or now - self._last_line >= LINE_PERIOD:
            why = f": {note}" if note else ""
            self._line(f"{loaded}/{self.required} {self._unit} loaded, waiting for {self._goal}{why}")
            self._last_line, self._printed = now, True

    def close(self) -> None:
        """End the report (idempotent)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._printed:
            self._line(f"{self._loaded}/{self.required} {self._unit} loaded")
        self.enabled = False

    def _line(self, text: str) -> None:
        print(f"dask_reservoir: {text}", file=self._stream, flush=True)
