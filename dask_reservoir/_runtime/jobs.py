"""The runner's dask tasks: the one holding the pickled function, and those of the jobs.

``function_to_run`` is sent once, as one task every job depends on
(:class:`FunctionPayload`): pickled by reference when the workers import its package,
by value otherwise, and again by value when a worker that cannot import it joins.
A job is ``rows_per_job`` source rows, run as one dask task by the
:class:`~dask_reservoir._runtime.runner.JobRunner`.  The task calls a worker-side
trampoline (:mod:`~dask_reservoir._worker.calls`, :mod:`~dask_reservoir._worker.chunks`)
with the task options, the future of the pickled function, and the rows: the columns of a
pandas source's rows (or one chunk of them with ``batched=True``), or, for a dask source,
the futures of the partitions that hold them and each row's place in them.  Lost partitions
of a dask source are persisted again before they are handed to a task.  The UIDs travel
:class:`~dask_reservoir._worker.wire.Opaque`, so dask never looks into them for futures.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, cast

import dask
from distributed import Client, Future

from dask_reservoir._core.etiquette import Placement
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import PandasSource, Source
from dask_reservoir._worker.calls import JobSpec, TaskOptions, run_partition_rows, run_rows
from dask_reservoir._worker.chunks import run_chunk, run_partition_chunk
from dask_reservoir._worker.shipping import function_package, payload_of
from dask_reservoir._worker.wire import Opaque

__all__ = ["GONE", "FunctionPayload", "Job", "function_key", "job_call", "load_key"]

logger = logging.getLogger("dask_reservoir")

GONE = ("cancelled", "lost", "error")
"""Statuses of a future whose result will never come (its task must be submitted again)."""


@dataclass
class Job:
    """A job in flight: its source rows, when it was submitted, and how its function travelled."""

    positions: list[int]
    submitted_at: float
    by_value: bool


def load_key(uid: Hashable) -> str:
    """A new, unique task key for a job whose first row is ``uid`` (readable on the dashboard).

    Examples
    --------
    >>> key = load_key("img/0001.png")
    >>> key.startswith("dask_reservoir-load-img_0001.png-"), len(key.rsplit("-", 1)[1])
    (True, 32)
    """
    return f"dask_reservoir-load-{_key_part(uid)}-{uuid.uuid4().hex}"


def function_key() -> str:
    """A new, unique task key for the task holding the pickled function."""
    return f"dask_reservoir-function-{uuid.uuid4().hex}"


def _key_part(uid: Hashable) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", str(uid))[:32]


def job_call(
    source: Source,
    positions: list[int],
    uids: list[Hashable],
    *,
    options: TaskOptions,
    payload: Future,
    batched: bool,
) -> tuple[Any, ...]:
    """The function and arguments of the dask task of the job of source rows ``positions``.

    Parameters
    ----------
    source : Source
        A :class:`PandasSource` (its rows travel with the task) or a :class:`DaskSource`
        (the task receives the futures of the partitions holding the rows; lost ones are
        persisted again first).
    positions, uids : list
        The job's source rows and their UIDs.
    options : TaskOptions
        The per-task options of the function's :class:`~dask_reservoir._worker.calls.JobSpec`.
    payload : distributed.Future
        The task holding the pickled function.
    batched : bool
        One call of the function per chunk of rows rather than per row.

    Returns
    -------
    tuple
        ``(function, *arguments)`` for ``client.submit``.
    """
    if isinstance(source, PandasSource) and batched:
        return (run_chunk, options, payload, source.chunk(positions), Opaque(uids))
    if isinstance(source, PandasSource):
        return (run_rows, options, payload, source.row_columns(positions), Opaque(uids))
    dask_source = cast(DaskSource, source)  # the two kinds of source
    refs = [dask_source.rows[p] for p in positions]
    wanted = sorted({part for part, _ in refs})
    gone = [p for p in wanted if dask_source.parts[p].status in GONE]
    if gone:
        logger.info("dask_reservoir: partitions %s of the dask source were lost; persisting them again", gone)
        dask_source.renew_partitions(gone)
    parts = {part: dask_source.parts[part] for part in wanted}
    run = run_partition_chunk if batched else run_partition_rows
    return (run, options, payload, parts, Opaque(refs), Opaque(uids))


class FunctionPayload:
    """``function_to_run`` on the cluster: how it travels, and the one task that holds it.

    Parameters
    ----------
    client : distributed.Client
        The client that submits the task (not closed here).
    spec : JobSpec
        The pickled function and its options.

    Attributes
    ----------
    spec : JobSpec
        The function's spec now (by value after :meth:`to_by_value`).
    package : str or None
        The package the function is imported from on the workers; None when it has none
        (it always travels by value).

    Examples
    --------
    A library function has no package of user code: it never changes how it travels.

    >>> spec = JobSpec.from_function(len, uid_column="uid", retries=0, rows_per_job=1, by_value=False)
    >>> shipped = FunctionPayload(None, spec)  # no task submitted yet: no client needed
    >>> shipped.to_by_value("a worker cannot import it")
    >>> shipped
    <FunctionPayload: package=None by_value=True task=none>
    >>> shipped.detach() is None  # nothing was sent
    True
    """

    def __init__(self, client: Client, spec: JobSpec, placement: Placement | None = None) -> None:
        self._client = client
        self._placement = placement or Placement()
        self.spec = spec
        self.package = None if spec.function is None else function_package(spec.function)
        self._future: Future | None = None

    def future(self) -> Future:
        """The task holding the pickled function (sent once; again if it was lost)."""
        if self._future is None or self._future.status in GONE:
            if self._future is not None:
                self._future.release()
            with dask.annotate(**self._placement.annotations):  # where the jobs may run, the function too
                self._future = self._client.submit(
                    payload_of,
                    self.spec.payload,
                    key=function_key(),
                    pure=False,
                    **self._placement.submit_kwargs(),
                )
        return self._future

    def to_by_value(self, why: str) -> None:
        """From now on the function travels by value (``why`` is logged); its task is sent again."""
        if self.spec.by_value:
            return
        logger.info("dask_reservoir: %s; function_to_run now travels by value", why)
        self.spec = self.spec.to_by_value()
        if self._future is not None:
            self._future.release()  # jobs in flight still hold it on the scheduler
            self._future = None

    def detach(self) -> Future | None:
        """The function's task, if any, forgotten here (the caller cancels it)."""
        future, self._future = self._future, None
        return future

    def __repr__(self) -> str:
        sent = "none" if self._future is None else self._future.status
        return f"<FunctionPayload: package={self.package!r} by_value={self.spec.by_value} task={sent}>"
