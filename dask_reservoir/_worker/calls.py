"""What runs on the dask workers: the trampoline around ``function_to_run``.

The user function travels as cloudpickle bytes (:attr:`JobSpec.payload`),
sent to the cluster once per reservoir as the result of one task that every
job depends on (dask moves it once per worker); the task function the
scheduler sees is :func:`run_rows` or :func:`run_partition_rows` of this
module, so a function defined in ``__main__``, a notebook or a test module
works on a remote scheduler that cannot import it (dask_reservoir itself must
be installed in the cluster's environment, as any dask library).  Each task
receives only the small :class:`TaskOptions`.  How the function is pickled
and loaded is :mod:`~dask_reservoir._worker.shipping`; ``job_timeout`` is
:mod:`~dask_reservoir._worker.timeouts`; what it returned is checked by
:mod:`~dask_reservoir._worker.produced`.

Each task returns one :data:`~dask_reservoir._core.records.Outcome` per source row:
:class:`~dask_reservoir._core.records.RowLoaded` or :class:`~dask_reservoir._core.records.RowFailed`,
in an :class:`Outcomes` list that dask pickles as one object.
"""

from __future__ import annotations

import copy
import os
import pickle
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pandas as pd

from dask_reservoir._core.blocks import ChunkLoaded
from dask_reservoir._core.collate import is_immutable
from dask_reservoir._core.records import Outcome, RowFailed, RowLoaded
from dask_reservoir._core.uid_index import same_uid
from dask_reservoir._worker.cache.tier import CacheCounted, CacheCounts, CacheTier
from dask_reservoir._worker.packing import pack
from dask_reservoir._worker.produced import normalize_result
from dask_reservoir._worker.shipping import dumps_function, function_package, load_function
from dask_reservoir._worker.timeouts import call_with_timeout
from dask_reservoir._worker.wire import Opaque, RowColumns, partition_records
from dask_reservoir.errors import JobError

__all__ = [
    "JobSpec",
    "Outcomes",
    "TaskOptions",
    "run_partition_rows",
    "run_rows",
]


class Outcomes(list[Outcome]):
    """What a task returns: one outcome per source row, in a list dask pickles whole.

    dask serialises a plain ``list`` result item by item, a header and a frame per
    item (measured: about 20 us per row on the worker and 4 us on the client, the
    cost of a tiny row many times over); it pickles a subclass as one object.  When
    every row loaded, the outcomes travel as three columns (UIDs, rows, seconds).

    Examples
    --------
    >>> import pickle
    >>> out = Outcomes([RowLoaded("a", [{"x": 1}], 0.5)])
    >>> back = pickle.loads(pickle.dumps(out))
    >>> type(back).__name__, back == out, type(back[0]).__name__
    ('Outcomes', True, 'RowLoaded')
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        if all(type(o) is RowLoaded for o in self):
            return (_loaded_outcomes, ([o[0] for o in self], [o[1] for o in self], [o[2] for o in self]))
        return (Outcomes, (list(self),))


def _loaded_outcomes(
    uids: list[Hashable], rows: list[list[dict[str, Any]]], seconds: list[float]
) -> Outcomes:
    """Unpickle the outcomes of a task whose rows all loaded (see :meth:`Outcomes.__reduce__`)."""
    new = tuple.__new__
    return Outcomes([new(RowLoaded, t) for t in zip(uids, rows, seconds, strict=True)])


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Opaque) else value


@dataclass(frozen=True)
class TaskOptions:
    """What every task receives besides its rows and the function (a few bytes).

    Attributes
    ----------
    uid_column : str
        Column that carries the UID in each produced row.
    attempts : int
        Tries per row inside a task of several rows (``retries + 1``).
    reraise : bool
        One row per task: let the exception fail the dask task, so that dask's
        ``retries=`` apply and the future reports it.
    timeout : float or None
        ``job_timeout`` (see :class:`JobSpec`).
    check_uid : bool
        A dask source with a UID column: check each row's UID, as read on the
        worker, against the expected one.
    cache : CacheTier or None
        The persistent tier (``cache=``): each row's result is read from it when kept.
    client_pid : int or None
        Process id of the client that submitted the task.  A worker in that process
        (a threaded cluster) hands its results over by reference, not serialized: what
        the function returned is copied when it returns (:func:`private_result`), since
        it may fill the same buffers again for its next row.
    """

    uid_column: str
    attempts: int = 1
    reraise: bool = False
    timeout: float | None = None
    check_uid: bool = False
    client_pid: int | None = None
    cache: CacheTier | None = None


@dataclass(frozen=True)
class JobSpec:
    """The pickled function and the options of its tasks.

    Attributes
    ----------
    payload : bytes
        ``function_to_run`` pickled (see :func:`~dask_reservoir._worker.shipping.dumps_function`).
    uid_column, attempts, reraise : str, int, bool
        As in :class:`TaskOptions`.
    timeout : float or None
        ``job_timeout``: seconds one call of the function may run before it is
        abandoned (the call goes on in a daemon thread until it returns, but the
        task, and so the worker's slot, is freed); at most
        :data:`~dask_reservoir._worker.timeouts.MAX_ABANDONED_CALLS` abandoned calls run per worker process.
    by_value : bool
        Whether ``payload`` holds the function's user code by value.
    function : callable or None
        The function itself (kept on the client, never sent), to pickle it by
        value later when a worker that cannot import it joins.
    """

    payload: bytes
    uid_column: str
    attempts: int = 1
    reraise: bool = False
    timeout: float | None = None
    by_value: bool = True
    function: Callable[[dict[str, Any]], Any] | None = field(default=None, compare=False, repr=False)
    batched: bool = False
    cache: CacheTier | None = None

    @classmethod
    def from_function(
        cls,
        function: Callable[[dict[str, Any]], Any],
        *,
        uid_column: str,
        retries: int,
        rows_per_job: int,
        timeout: float | None = None,
        by_value: bool = True,
        batched: bool = False,
        cache: CacheTier | None = None,
    ) -> JobSpec:
        """Pickle ``function`` (see :func:`~dask_reservoir._worker.shipping.dumps_function`) and build the spec.

        ``rows_per_job`` 0 means "auto" (tasks of varying size: retries run in the task).
        ``batched``: one call per chunk (:mod:`~dask_reservoir._worker.chunks`), retried in the task.
        """
        single = rows_per_job == 1 and not batched
        return cls(
            payload=dumps_function(function, by_value=by_value),
            uid_column=uid_column,
            attempts=1 if single else 1 + retries,
            reraise=single,
            timeout=timeout,
            by_value=by_value or function_package(function) is None,
            function=function,
            batched=batched,
            cache=cache,
        )

    def options(self, *, check_uid: bool = False) -> TaskOptions:
        """The small per-task part of this spec."""
        return TaskOptions(
            self.uid_column,
            self.attempts,
            self.reraise,
            self.timeout,
            check_uid,
            client_pid=os.getpid(),
            cache=self.cache,
        )

    def to_by_value(self) -> JobSpec:
        """Return this spec with the function pickled by value (itself if it is, or cannot be).

        Examples
        --------
        >>> spec = JobSpec.from_function(len, uid_column="uid", retries=0, rows_per_job=1, by_value=False)
        >>> spec.by_value, spec.to_by_value() is spec  # a library function: always a reference
        (True, True)
        """
        if self.by_value or self.function is None:
            return self
        return replace(self, payload=dumps_function(self.function, by_value=True), by_value=True)


def picklable_error(exc: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    exc.__traceback__ = None
    return exc


def _run_one(
    options: TaskOptions,
    function: Callable[[dict[str, Any]], Any],
    record: dict[str, Any],
    uid: Hashable,
    counts: CacheCounts | None = None,
) -> Outcome:
    tier = options.cache
    if tier is None or counts is None:
        return _compute(options, function, record, uid)
    start = time.perf_counter()
    try:  # the key is read from the row before the function may change it
        return tier.load(
            uid, record, options.uid_column, lambda: _compute(options, function, record, uid), counts
        )
    except Exception as exc:  # a row the tier cannot key, or a value it cannot hold
        if options.reraise:
            raise
        return _failed(uid, exc, time.perf_counter() - start)


def _compute(
    options: TaskOptions, function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable
) -> Outcome:
    start = time.perf_counter()
    for attempt in range(options.attempts):
        try:
            if options.timeout is None:
                result = function(record)
            else:
                result = call_with_timeout(function, record, uid, options.timeout)
            rows = normalize_result(result, uid, options.uid_column)
            if private_result(options):
                rows = [{k: _private(v) for k, v in row.items()} for row in rows]
            return RowLoaded(uid, rows, time.perf_counter() - start)
        except Exception as exc:
            if options.reraise:
                raise
            if attempt + 1 < options.attempts:
                continue
            return _failed(uid, exc, time.perf_counter() - start)
    raise AssertionError("unreachable")  # pragma: no cover


def private_result(options: Any) -> bool:
    """Whether results must be copied here: this worker runs in the submitting client's process.

    Examples
    --------
    >>> private_result(TaskOptions("uid", client_pid=os.getpid())), private_result(TaskOptions("uid"))
    (True, False)
    """
    return getattr(options, "client_pid", None) == os.getpid()


def _private(value: Any) -> Any:
    """A copy of ``value`` nothing else holds (immutable values are shared).

    One that cannot be copied is kept: the store refuses it, naming its UID and column.
    """
    if type(value) is np.ndarray and value.dtype != object:
        return value.copy()
    if is_immutable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _failed(uid: Hashable, exc: BaseException, seconds: float) -> RowFailed:
    text = "".join(traceback.format_exception(exc))
    return RowFailed(uid, type(exc).__name__, str(exc), text, picklable_error(exc), seconds)


def misread(read: Hashable, expected: Hashable, column: str) -> RowFailed:
    """The failure of a dask source row whose UID, as read on the worker, is not the expected one."""
    message = (
        f"the dask source row read on the worker has UID {read!r} in column {column!r}, "
        f"expected UID {expected!r} (the row order of the source changed between reads?)"
    )
    return RowFailed(expected, "JobError", message, "", JobError(message, uid=expected), 0.0)


def run_rows(
    options: TaskOptions,
    payload: bytes,
    records: Sequence[dict[str, Any]] | Opaque | RowColumns,
    uids: Sequence[Hashable] | Opaque,
) -> Outcomes | ChunkLoaded | CacheCounted:
    """Run ``function_to_run`` (pickled in ``payload``) on each record; one outcome per record.

    ``records`` are row dicts (each copied before the call), or :class:`~dask_reservoir._source.pandas_source.RowColumns`.

    Raises
    ------
    ~dask_reservoir._worker.shipping.FunctionLoadError
        When this worker cannot unpickle the function.

    Examples
    --------
    >>> spec = JobSpec.from_function(lambda row: {"y": row["x"] * 2}, uid_column="uid", retries=0, rows_per_job=2)
    >>> [o.rows for o in run_rows(spec.options(), spec.payload, [{"x": 1, "uid": "a"}], ["a"])]
    [[{'y': 2, 'uid': 'a'}]]
    """
    function = load_function(payload)
    uid_list: Sequence[Hashable] = _unwrap(uids)
    if isinstance(records, RowColumns):  # fresh dicts, built here
        row_list = records.records()
    else:
        row_list = [dict(record) for record in _unwrap(records)]
    counts = CacheCounts() if options.cache is not None else None
    outcomes = [
        _run_one(options, function, record, uid, counts)
        for record, uid in zip(row_list, uid_list, strict=True)
    ]
    return _counted(pack(outcomes) or Outcomes(outcomes), counts)


def _counted(
    result: Outcomes | ChunkLoaded, counts: CacheCounts | None
) -> Outcomes | ChunkLoaded | CacheCounted:
    return result if counts is None else CacheCounted(result, counts.as_tuple())


def run_partition_rows(
    options: TaskOptions,
    payload: bytes,
    parts: dict[int, pd.DataFrame],
    refs: Sequence[tuple[int, int]] | Opaque,
    uids: Sequence[Hashable] | Opaque,
) -> Outcomes | ChunkLoaded | CacheCounted:
    """Read rows ``refs`` (partition, offset) of a dask source on the worker, then run them.

    With ``options.check_uid``, a row whose UID column, as read here, is not the
    expected UID fails (naming both UIDs) instead of running on another row's data.

    Examples
    --------
    >>> spec = JobSpec.from_function(lambda row: {"v": row["v"]}, uid_column="uid", retries=0, rows_per_job=2)
    >>> parts = {0: pd.DataFrame({"uid": ["a", "b"], "v": [1, 2]})}
    >>> out = run_partition_rows(spec.options(check_uid=True), spec.payload, parts, [(0, 1), (0, 0)], ["b", "x"])
    >>> out[0].rows, out[1].message
    ([{'v': 2, 'uid': 'b'}], "the dask source row read on the worker has UID 'a' in column 'uid', expected UID 'x' (the row order of the source changed between reads?)")
    """
    ref_list: Sequence[tuple[int, int]] = _unwrap(refs)
    uid_list: Sequence[Hashable] = _unwrap(uids)
    function = load_function(payload)
    by_part: dict[int, list[int]] = {}  # partition -> indices into ref_list
    for i, (part, _) in enumerate(ref_list):
        by_part.setdefault(part, []).append(i)
    records: list[dict[str, Any]] = [{} for _ in ref_list]
    for part, indices in by_part.items():  # one iloc per partition
        rows = partition_records(parts[part], [ref_list[i][1] for i in indices])
        for i, row in zip(indices, rows, strict=True):
            records[i] = row
    outcomes = Outcomes()
    counts = CacheCounts() if options.cache is not None else None
    for record, uid in zip(records, uid_list, strict=True):
        column = options.uid_column
        if options.check_uid and column in record and not same_uid(record[column], uid):
            failed = misread(record[column], uid, column)
            if options.reraise:
                raise cast(JobError, failed.exception)
            outcomes.append(failed)
            continue
        record[column] = uid
        outcomes.append(_run_one(options, function, record, uid, counts))
    return _counted(pack(outcomes) or outcomes, counts)
