"""What runs on the dask workers: the trampoline around ``function_to_run``.

The user function travels as cloudpickle bytes (:attr:`JobSpec.payload`),
sent to the cluster once per reservoir as the result of one task that every
job depends on (dask moves it once per worker); the task function the
scheduler sees is :func:`run_rows` or :func:`run_partition_rows` of this
module, so a function defined in ``__main__``, a notebook or a test module
works on a remote scheduler that cannot import it (dask_reservoir itself must
be installed in the cluster's environment, as any dask library).  Each task
receives only the small :class:`TaskOptions`.

Each task returns one :data:`~dask_reservoir.outcomes.Outcome` per source row:
:class:`~dask_reservoir.outcomes.RowLoaded` or :class:`~dask_reservoir.outcomes.RowFailed`.
"""

from __future__ import annotations

import contextvars
import functools
import os
import pickle
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .errors import JobError, JobTimeoutError
from .outcomes import Outcome, RowFailed, RowLoaded
from .source import partition_records

__all__ = [
    "MAX_ABANDONED_CALLS",
    "FunctionLoadError",
    "JobSpec",
    "Opaque",
    "TaskOptions",
    "normalize_result",
    "payload_of",
    "run_partition_rows",
    "run_rows",
]

_PICKLE_LOCK = threading.Lock()

MAX_ABANDONED_CALLS = 4
"""Most calls abandoned by ``job_timeout`` that may still run in one worker process.

Python cannot interrupt a call, so an abandoned call goes on in a daemon thread
until it returns.  Beyond this many, a new call first waits (within its own
``job_timeout``) for one of them to return, else fails with a
:class:`~dask_reservoir.errors.JobTimeoutError` saying how many still run.
"""


class FunctionLoadError(ImportError):
    """The worker could not unpickle ``function_to_run`` (its module is not importable there).

    The runner then sends the function by value and submits the rows again.
    """


class Opaque:
    """A task argument dask must not scan for futures (a list of thousands of row dicts).

    dask walks lists, tuples and dicts of every argument looking for futures,
    which costs microseconds per element; this wrapper is passed as one object.

    Examples
    --------
    >>> Opaque([1, 2]).value
    [1, 2]
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Opaque, (self.value,))


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Opaque) else value


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        os.path.realpath(p) + os.sep
        for p in {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    )


def _is_library(module: object) -> bool:
    """Whether ``module`` comes from the standard library or site-packages (importable on a cluster)."""
    file = getattr(module, "__file__", None)
    if not file:
        return True  # builtin or namespace: leave it to pickle by reference
    return os.path.realpath(file).startswith(_library_dirs())


def function_package(function: Callable[..., Any]) -> str | None:
    """Top-level package of ``function``'s module when it is user code, else None.

    None for ``__main__`` (cloudpickle always sends it by value), builtins, the
    standard library and site-packages.

    Examples
    --------
    >>> function_package(len) is None
    True
    """
    module_name = getattr(function, "__module__", None) or "__main__"
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    if module is None or top == "__main__" or _is_library(sys.modules.get(module_name, module)):
        return None
    return top


def dumps_function(function: Callable[..., Any], *, by_value: bool = True) -> bytes:
    """Pickle ``function`` so that a cluster which cannot import its module can run it.

    With ``by_value``, functions of user code (see :func:`function_package`) are
    pickled by value with cloudpickle, together with what they use from their
    own top-level package (module globals they use are copied); functions of
    installed libraries stay references.  When the by-value pickle fails (a
    module-level lock, say), a reference is sent instead.

    Examples
    --------
    >>> import cloudpickle
    >>> cloudpickle.loads(dumps_function(len))("abc")
    3
    """
    top = function_package(function)
    if top is None or not by_value:
        return cloudpickle.dumps(function)
    module = sys.modules[top]
    with _PICKLE_LOCK:
        registered = top in cloudpickle.list_registry_pickle_by_value()
        try:
            if not registered:
                cloudpickle.register_pickle_by_value(module)
            return cloudpickle.dumps(function)
        except Exception:
            pass
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)
    return cloudpickle.dumps(function)


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
    """

    uid_column: str
    attempts: int = 1
    reraise: bool = False
    timeout: float | None = None
    check_uid: bool = False


@dataclass(frozen=True)
class JobSpec:
    """The pickled function and the options of its tasks.

    Attributes
    ----------
    payload : bytes
        ``function_to_run`` pickled (see :func:`dumps_function`).
    uid_column : str
        Column that carries the UID in each produced row.
    attempts : int
        Tries per row inside a task of several rows (``retries + 1``).
    reraise : bool
        One row per task: let the exception fail the dask task, so that dask's
        ``retries=`` apply and the future reports it.
    timeout : float or None
        ``job_timeout``: seconds one call of the function may run before it is
        abandoned (the call goes on in a daemon thread until it returns, but
        the task, and so the worker's slot, is freed); at most
        :data:`MAX_ABANDONED_CALLS` abandoned calls run per worker process.
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
    ) -> JobSpec:
        """Pickle ``function`` (see :func:`dumps_function`) and build the spec.

        ``rows_per_job`` 0 means "auto" (tasks of varying size: retries run in the task).
        """
        return cls(
            payload=dumps_function(function, by_value=by_value),
            uid_column=uid_column,
            attempts=1 + retries if rows_per_job != 1 else 1,
            reraise=rows_per_job == 1,
            timeout=timeout,
            by_value=by_value or function_package(function) is None,
            function=function,
        )

    def options(self, *, check_uid: bool = False) -> TaskOptions:
        """The small per-task part of this spec."""
        return TaskOptions(self.uid_column, self.attempts, self.reraise, self.timeout, check_uid)

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


def payload_of(payload: bytes) -> bytes:
    """The task that holds the pickled function on the cluster (the identity)."""
    return payload


@functools.lru_cache(maxsize=32)
def _load(payload: bytes) -> Callable[[dict[str, Any]], Any]:
    try:
        function: Callable[[dict[str, Any]], Any] = cloudpickle.loads(payload)
    except (ImportError, AttributeError) as exc:
        raise FunctionLoadError(
            f"this worker cannot load function_to_run ({type(exc).__name__}: {exc}); it must travel by value"
        ) from None
    return function


def _check_row(row: object, uid: Hashable, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise JobError(
            f"function_to_run returned a list holding a {type(row).__name__} {where} for UID "
            f"{uid!r}; each item must be a dict of column -> value",
            uid=uid,
        )
    for key, value in row.items():
        if not isinstance(key, str):
            raise JobError(
                f"function_to_run returned a dict with a non-str key {key!r} "
                f"({type(key).__name__}) for UID {uid!r}; column names must be str",
                uid=uid,
            )
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise JobError(
                f"function_to_run returned column {key!r} as an object-dtype array for UID "
                f"{uid!r}; return numeric, bool or str arrays (or scalars)",
                uid=uid,
            )
    return row


def _same_value(a: object, b: object) -> bool:
    try:
        return a is b or (bool(a == b) and hash(a) == hash(b))
    except Exception:
        return False


def normalize_result(result: object, uid: Hashable, uid_column: str) -> list[dict[str, Any]]:
    """Turn what ``function_to_run`` returned into a list of rows carrying ``uid``.

    A dict is one row; a list of dicts or a pandas DataFrame are several rows;
    an empty list or frame is no row.  Anything else raises :class:`JobError`
    naming the UID and the type returned, and so does a row whose UID column
    holds another value than ``uid`` (an equal value is kept).

    Examples
    --------
    >>> normalize_result({"x": 1}, 7, "sample_uid")
    [{'x': 1, 'sample_uid': 7}]
    >>> normalize_result([], 7, "sample_uid")
    []
    >>> normalize_result(None, 7, "sample_uid")
    Traceback (most recent call last):
    ...
    dask_reservoir.errors.JobError: function_to_run must return a dict, a list of dicts or a pandas DataFrame, got NoneType for UID 7
    >>> normalize_result({"sample_uid": 8}, 7, "sample_uid")
    Traceback (most recent call last):
    ...
    dask_reservoir.errors.JobError: function_to_run returned 8 in the UID column 'sample_uid' (row 0) for UID 7; leave the column out or return the row's own UID
    """
    if isinstance(result, dict):
        rows: list[Any] = [result]
    elif isinstance(result, list):
        rows = result
    elif isinstance(result, pd.DataFrame):
        rows = result.to_dict("records")
    else:
        raise JobError(
            "function_to_run must return a dict, a list of dicts or a pandas DataFrame, "
            f"got {type(result).__name__} for UID {uid!r}",
            uid=uid,
        )
    out = []
    for i, row in enumerate(rows):
        checked = dict(_check_row(row, uid, f"at index {i}"))
        if uid_column in checked and not _same_value(checked[uid_column], uid):
            raise JobError(
                f"function_to_run returned {checked[uid_column]!r} in the UID column {uid_column!r} "
                f"(row {i}) for UID {uid!r}; leave the column out or return the row's own UID",
                uid=uid,
            )
        checked[uid_column] = uid
        out.append(checked)
    return out


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    exc.__traceback__ = None
    return exc


class _Abandoned:
    """Calls abandoned by ``job_timeout`` that still run in this process."""

    cond = threading.Condition()
    running = 0


def _call_with_timeout(
    function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable, timeout: float
) -> Any:
    """Call ``function(record)`` in a thread with the worker's context; give up after ``timeout``."""
    deadline = time.monotonic() + timeout
    with _Abandoned.cond:
        while _Abandoned.running >= MAX_ABANDONED_CALLS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeoutError(
                    f"function_to_run was not started for UID {uid!r}: {_Abandoned.running} calls "
                    f"abandoned after job_timeout={timeout:g} s still run in this worker process "
                    f"(at most {MAX_ABANDONED_CALLS}) and none returned within job_timeout",
                    uid=uid,
                )
            _Abandoned.cond.wait(remaining)
    box: dict[str, Any] = {}
    state = {"done": False, "abandoned": False}
    context = contextvars.copy_context()  # distributed.get_worker() works inside

    def target() -> None:
        try:
            box["value"] = context.run(function, record)
        except BaseException as exc:
            box["error"] = exc
        finally:
            with _Abandoned.cond:
                state["done"] = True
                if state["abandoned"]:
                    _Abandoned.running -= 1
                _Abandoned.cond.notify_all()

    thread = threading.Thread(target=target, name=f"dask_reservoir-job-{uid!s:.32}", daemon=True)
    thread.start()
    with _Abandoned.cond:
        while not state["done"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state["abandoned"] = True
                _Abandoned.running += 1
                raise JobTimeoutError(
                    f"function_to_run ran longer than job_timeout={timeout:g} s for UID {uid!r}; "
                    f"the job was abandoned ({_Abandoned.running} abandoned calls still run in "
                    f"this worker process, at most {MAX_ABANDONED_CALLS})",
                    uid=uid,
                )
            _Abandoned.cond.wait(remaining)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _run_one(
    options: TaskOptions, function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable
) -> Outcome:
    start = time.perf_counter()
    for attempt in range(options.attempts):
        try:
            if options.timeout is None:
                result = function(record)
            else:
                result = _call_with_timeout(function, record, uid, options.timeout)
            rows = normalize_result(result, uid, options.uid_column)
            return RowLoaded(uid, rows, time.perf_counter() - start)
        except Exception as exc:
            if options.reraise:
                raise
            if attempt + 1 < options.attempts:
                continue
            return _failed(uid, exc, time.perf_counter() - start)
    raise AssertionError("unreachable")  # pragma: no cover


def _failed(uid: Hashable, exc: BaseException, seconds: float) -> RowFailed:
    text = "".join(traceback.format_exception(exc))
    return RowFailed(uid, type(exc).__name__, str(exc), text, _picklable(exc), seconds)


def run_rows(
    options: TaskOptions,
    payload: bytes,
    records: Sequence[dict[str, Any]] | Opaque,
    uids: Sequence[Hashable] | Opaque,
) -> list[Outcome]:
    """Run ``function_to_run`` (pickled in ``payload``) on each record; one outcome per record.

    Raises
    ------
    FunctionLoadError
        When this worker cannot unpickle the function.

    Examples
    --------
    >>> spec = JobSpec.from_function(lambda row: {"y": row["x"] * 2}, uid_column="uid", retries=0, rows_per_job=2)
    >>> [o.rows for o in run_rows(spec.options(), spec.payload, [{"x": 1, "uid": "a"}], ["a"])]
    [[{'y': 2, 'uid': 'a'}]]
    """
    function = _load(payload)
    row_list: Sequence[dict[str, Any]] = _unwrap(records)
    uid_list: Sequence[Hashable] = _unwrap(uids)
    return [
        _run_one(options, function, dict(record), uid) for record, uid in zip(row_list, uid_list, strict=True)
    ]


def run_partition_rows(
    options: TaskOptions,
    payload: bytes,
    parts: dict[int, pd.DataFrame],
    refs: Sequence[tuple[int, int]] | Opaque,
    uids: Sequence[Hashable] | Opaque,
) -> list[Outcome]:
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
    function = _load(payload)
    by_part: dict[int, list[int]] = {}  # partition -> indices into ref_list
    for i, (part, _) in enumerate(ref_list):
        by_part.setdefault(part, []).append(i)
    records: list[dict[str, Any]] = [{} for _ in ref_list]
    for part, indices in by_part.items():  # one iloc per partition
        rows = partition_records(parts[part], [ref_list[i][1] for i in indices])
        for i, row in zip(indices, rows, strict=True):
            records[i] = row
    outcomes: list[Outcome] = []
    for record, uid in zip(records, uid_list, strict=True):
        column = options.uid_column
        if options.check_uid and column in record and not _same_value(record[column], uid):
            message = (
                f"the dask source row read on the worker has UID {record[column]!r} in column "
                f"{column!r}, expected UID {uid!r} (the row order of the source changed between reads?)"
            )
            exc = JobError(message, uid=uid)
            if options.reraise:
                raise exc
            outcomes.append(RowFailed(uid, "JobError", message, "", exc, 0.0))
            continue
        record[column] = uid
        outcomes.append(_run_one(options, function, record, uid))
    return outcomes
