"""What runs on the dask workers: the trampoline around ``function_to_run``.

The user function travels by value, as cloudpickle bytes inside a
:class:`JobSpec`; the task function the scheduler sees is
:func:`run_rows` or :func:`run_partition_rows` of this module, so a function
defined in ``__main__``, a notebook or a test module works on a remote
scheduler that cannot import it (dask_reservoir itself must be installed in
the cluster's environment, as any dask library).

Each task returns one :data:`~dask_reservoir.outcomes.Outcome` per source row:
:class:`~dask_reservoir.outcomes.RowLoaded` or :class:`~dask_reservoir.outcomes.RowFailed`.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .errors import JobError, JobTimeoutError
from .outcomes import Outcome, RowFailed, RowLoaded
from .source import partition_records

__all__ = ["JobSpec", "Opaque", "normalize_result", "run_partition_rows", "run_rows"]

_PICKLE_LOCK = threading.Lock()


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
class JobSpec:
    """Everything a task needs besides its rows.

    Attributes
    ----------
    payload : bytes
        ``cloudpickle.dumps(function_to_run)``.
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
        the task, and so the worker's slot, is freed).
    """

    payload: bytes
    uid_column: str
    attempts: int = 1
    reraise: bool = False
    timeout: float | None = None

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
        )


@functools.lru_cache(maxsize=32)
def _load(payload: bytes) -> Callable[[dict[str, Any]], Any]:
    function: Callable[[dict[str, Any]], Any] = cloudpickle.loads(payload)
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


def normalize_result(result: object, uid: Hashable, uid_column: str) -> list[dict[str, Any]]:
    """Turn what ``function_to_run`` returned into a list of rows carrying ``uid``.

    A dict is one row; a list of dicts or a pandas DataFrame are several rows;
    an empty list or frame is no row.  Anything else raises :class:`JobError`
    naming the UID and the type returned.

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


def _call_with_timeout(
    function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable, timeout: float
) -> Any:
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = function(record)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"dask_reservoir-job-{uid!s:.32}", daemon=True)
    thread.start()
    if not done.wait(timeout):
        raise JobTimeoutError(
            f"function_to_run ran longer than job_timeout={timeout:g} s for UID {uid!r}; "
            "the job was abandoned",
            uid=uid,
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _run_one(
    spec: JobSpec, function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable
) -> Outcome:
    start = time.perf_counter()
    for attempt in range(spec.attempts):
        try:
            if spec.timeout is None:
                result = function(record)
            else:
                result = _call_with_timeout(function, record, uid, spec.timeout)
            rows = normalize_result(result, uid, spec.uid_column)
            return RowLoaded(uid, rows, time.perf_counter() - start)
        except Exception as exc:
            if spec.reraise:
                raise
            if attempt + 1 < spec.attempts:
                continue
            text = "".join(traceback.format_exception(exc))
            return RowFailed(
                uid, type(exc).__name__, str(exc), text, _picklable(exc), time.perf_counter() - start
            )
    raise AssertionError("unreachable")  # pragma: no cover


def run_rows(
    spec: JobSpec,
    records: Sequence[dict[str, Any]] | Opaque,
    uids: Sequence[Hashable] | Opaque,
) -> list[Outcome]:
    """Run ``function_to_run`` on each record; one outcome per record.

    Examples
    --------
    >>> spec = JobSpec.from_function(lambda row: {"y": row["x"] * 2}, uid_column="uid", retries=0, rows_per_job=2)
    >>> [o.rows for o in run_rows(spec, [{"x": 1, "uid": "a"}], ["a"])]
    [[{'y': 2, 'uid': 'a'}]]
    """
    function = _load(spec.payload)
    row_list: Sequence[dict[str, Any]] = _unwrap(records)
    uid_list: Sequence[Hashable] = _unwrap(uids)
    return [
        _run_one(spec, function, dict(record), uid) for record, uid in zip(row_list, uid_list, strict=True)
    ]


def run_partition_rows(
    spec: JobSpec,
    parts: dict[int, pd.DataFrame],
    refs: Sequence[tuple[int, int]] | Opaque,
    uids: Sequence[Hashable] | Opaque,
) -> list[Outcome]:
    """Read rows ``refs`` (partition, offset) of a dask source on the worker, then run them."""
    ref_list: Sequence[tuple[int, int]] = _unwrap(refs)
    uid_list: Sequence[Hashable] = _unwrap(uids)
    by_part: dict[int, list[int]] = {}  # partition -> indices into ref_list
    for i, (part, _) in enumerate(ref_list):
        by_part.setdefault(part, []).append(i)
    records: list[dict[str, Any]] = [{} for _ in ref_list]
    for part, indices in by_part.items():  # one iloc per partition
        rows = partition_records(
            parts[part],
            [ref_list[i][1] for i in indices],
            uid_column=spec.uid_column,
            uids=[uid_list[i] for i in indices],
        )
        for i, row in zip(indices, rows, strict=True):
            records[i] = row
    return run_rows(spec, records, uid_list)
