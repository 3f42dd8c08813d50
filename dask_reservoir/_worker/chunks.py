"""Vectorized jobs (``batched=True``): one call of ``function_to_run`` per chunk of source rows.

Runs on the workers.  The function receives a ``pandas.DataFrame`` of up to
``rows_per_job`` source rows (the UID column included, dtypes as in the source)
and returns a DataFrame, or a dict of equal-length arrays, of produced rows,
each carrying in the UID column the source UID it belongs to (0..n rows per
UID).  What it returned is checked once per chunk, vectorized, and travels back
as one :class:`ColumnBlock`: one array per column, rows grouped by source UID in
chunk order, and one count per source UID (:class:`ChunkLoaded`).  A chunk whose
function raised (after ``retries``) or returned something wrong fails every UID
of the chunk, with a :class:`~dask_reservoir.errors.JobError` naming the
function, the chunk's UIDs and what was wrong.

Pandas extension dtypes (categorical, string, nullable integers, time-zone aware
datetimes) travel as numpy arrays plus the dtype, which
:meth:`ColumnBlock.restore` applies again to a table of its rows.
"""

from __future__ import annotations

import copy
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from dask_reservoir._core.blocks import ChunkLoaded, ColumnBlock, as_rows
from dask_reservoir._core.records import RowFailed
from dask_reservoir._core.uid_index import same_uid
from dask_reservoir._worker.calls import misread, picklable_error, private_result
from dask_reservoir._worker.shipping import load_function
from dask_reservoir._worker.timeouts import call_with_timeout
from dask_reservoir.errors import SHOWN, JobError, first_values

__all__ = ["run_chunk", "run_partition_chunk", "to_block"]


def _stacked(values: np.ndarray) -> np.ndarray:
    """An object column of equal-shaped arrays of one dtype as one ``(n, *shape)`` array; else as is."""
    if values.dtype != object or not len(values) or type(values[0]) is not np.ndarray:
        return values
    first = values[0]
    if all(type(v) is np.ndarray and v.shape == first.shape and v.dtype == first.dtype for v in values):
        return np.stack(values.tolist())
    return values


def _numpy_column(series: pd.Series) -> tuple[np.ndarray, Any]:
    """A column as a numpy array, and the pandas dtype to restore (None: the array's own)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        return _stacked(series.to_numpy()), None
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(), dtype
    # categorical, string, nullable ints/floats/bools, ...: the values, missing as None
    as_objects = series.astype(object)
    values = np.asarray(as_objects.where(as_objects.notna(), None), dtype=object)
    return values, dtype


def _private_column(values: np.ndarray) -> np.ndarray:
    """A copy of a column nothing else holds (objects deep-copied, as batches copy them).

    Objects that cannot be copied are kept: the store refuses them, naming UID and column.
    """
    if values.dtype == object:
        try:
            return copy.deepcopy(values)
        except Exception:
            pass
    return values.copy()


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


def to_block(result: object, chunk_uids: pd.Index, uid_column: str) -> tuple[np.ndarray, ColumnBlock]:
    """Check what a vectorized function returned; its rows per source UID and its block.

    Raises ``ValueError`` saying what was wrong (the caller names the function and UIDs).

    Examples
    --------
    >>> out = pd.DataFrame({"uid": ["b", "a", "b"], "y": [1, 2, 3]})
    >>> counts, block = to_block(out, pd.Index(["a", "b", "c"]), "uid")
    >>> counts.tolist(), block.columns["uid"].tolist(), block.columns["y"].tolist()
    ([1, 2, 0], ['a', 'b', 'b'], [2, 1, 3])
    >>> to_block([{"uid": "a"}], pd.Index(["a"]), "uid")
    Traceback (most recent call last):
    ...
    ValueError: it must return a pandas DataFrame or a dict of equal-length arrays, got list
    """
    columns: dict[str, np.ndarray] = {}
    dtypes: dict[str, Any] = {}
    if isinstance(result, dict):
        bad = [k for k in result if not isinstance(k, str)]
        if bad:
            raise ValueError(f"its column names must be str, got {bad[0]!r} ({type(bad[0]).__name__})")
        for name, value in result.items():
            if isinstance(value, pd.Series):
                columns[name], dtype = _numpy_column(value.reset_index(drop=True))
                if dtype is not None:
                    dtypes[name] = dtype
                continue
            array = _stacked(value) if isinstance(value, np.ndarray) else np.asarray(value)
            if array.ndim == 0:
                raise ValueError(
                    f"column {name!r} is a scalar ({type(value).__name__}), not an array of rows"
                )
            columns[name] = array
        lengths = {name: len(v) for name, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"its columns must have equal lengths, got {lengths}")
    elif isinstance(result, pd.DataFrame):
        names = list(result.columns)
        duplicated = list(dict.fromkeys(pd.Index(names)[pd.Index(names).duplicated()].tolist()))
        if duplicated:
            raise ValueError(f"its DataFrame has duplicate columns {duplicated!r}")
        bad = [k for k in names if not isinstance(k, str)]
        if bad:
            raise ValueError(f"its column names must be str, got {bad[0]!r} ({type(bad[0]).__name__})")
        for name in names:
            columns[name], dtype = _numpy_column(result[name])
            if dtype is not None:
                dtypes[name] = dtype
    else:
        raise ValueError(
            f"it must return a pandas DataFrame or a dict of equal-length arrays, got {type(result).__name__}"
        )
    if uid_column not in columns:
        raise ValueError(
            f"its rows must carry their source UID in the UID column {uid_column!r}, "
            f"which it did not return (columns: {list(columns)!r})"
        )
    owner = chunk_uids.get_indexer(pd.Index(columns[uid_column]))
    foreign = np.flatnonzero(owner < 0)
    if len(foreign):
        found = columns[uid_column][foreign[:SHOWN]].tolist()
        raise ValueError(
            f"{len(foreign)} of its rows carry UIDs that are not in the chunk, such as {found!r}"
        )
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=len(chunk_uids)).astype(np.int64)
    if not np.array_equal(order, np.arange(len(order))):
        columns = {k: v[order] for k, v in columns.items()}
    return counts, ColumnBlock(columns, dtypes)


def _failed_chunk(
    uids: Sequence[Hashable], exc: BaseException, seconds: float, function: Callable[..., Any]
) -> list[RowFailed]:
    """Every UID of the chunk failed with ``exc`` (kept only if it can travel back)."""
    text = "".join(traceback.format_exception(exc))
    message = str(exc)
    if not isinstance(exc, JobError):  # it raised: say where, as a wrong result does
        message = f"{message} (raised by function_to_run {_name(function)}, batched=True, for the chunk of UIDs {first_values(uids)})"
    kept = picklable_error(exc)
    return [RowFailed(uid, type(exc).__name__, message, text, kept, seconds) for uid in uids]


def _run(
    options: Any, function: Callable[[pd.DataFrame], Any], chunk: pd.DataFrame, uids: list[Hashable]
) -> ChunkLoaded | list[RowFailed]:
    start = time.perf_counter()
    index = pd.Index(uids)
    error: BaseException = RuntimeError("function_to_run was not called")
    for _ in range(max(1, options.attempts)):
        try:
            if options.timeout is None:
                result = function(chunk.copy(deep=False))
            else:
                call = cast(Callable[[Any], Any], function)
                result = call_with_timeout(call, cast(Any, chunk.copy(deep=False)), uids[0], options.timeout)
        except Exception as exc:
            error = exc
            continue
        try:
            counts, block = to_block(result, index, options.uid_column)
        except ValueError as exc:
            error = JobError(
                f"function_to_run {_name(function)} (batched=True) returned a wrong result for the chunk "
                f"of UIDs {first_values(uids)}: {exc}",
                uid=uids[0],
            )
            continue
        if private_result(options):  # a threaded cluster: the arrays may be the function's own buffers
            block = ColumnBlock({k: _private_column(v) for k, v in block.columns.items()}, block.dtypes)
        return ChunkLoaded(uids, counts, block, time.perf_counter() - start)
    return _failed_chunk(uids, error, time.perf_counter() - start, function)


def run_chunk(options: Any, payload: bytes, chunk: Any, uids: Any) -> ChunkLoaded | list[RowFailed]:
    """Run the vectorized ``function_to_run`` once on ``chunk``, a pandas DataFrame of source rows.

    Examples
    --------
    >>> from dask_reservoir._worker.calls import JobSpec
    >>> spec = JobSpec.from_function(lambda df: df.assign(y=df.x * 2), uid_column="uid", retries=0, rows_per_job=2)
    >>> out = run_chunk(spec.options(), spec.payload, pd.DataFrame({"uid": ["a", "b"], "x": [1, 2]}), ["a", "b"])
    >>> out.counts.tolist(), out.block.columns["y"].tolist()
    ([1, 1], [2, 4])
    """
    frame = chunk.value if hasattr(chunk, "value") else chunk
    uid_list = uids.value if hasattr(uids, "value") else uids
    return _run(options, cast(Callable[[pd.DataFrame], Any], load_function(payload)), frame, list(uid_list))


def run_partition_chunk(
    options: Any, payload: bytes, parts: dict[int, pd.DataFrame], refs: Any, uids: Any
) -> ChunkLoaded | list[Any]:
    """Read rows ``refs`` (partition, offset) of a dask source on the worker, then run them as one chunk.

    The chunk's rows are in the order of ``refs``.  With ``options.check_uid``, rows
    whose UID column, as read here, is not the expected UID fail (naming both) and
    the others run; the outcome is then one per row, in the order of ``refs``.

    Examples
    --------
    >>> from dask_reservoir._worker.calls import JobSpec
    >>> spec = JobSpec.from_function(lambda df: df, uid_column="uid", retries=0, rows_per_job=2)
    >>> parts = {0: pd.DataFrame({"uid": ["a", "b"]}), 1: pd.DataFrame({"uid": ["c"]})}
    >>> run_partition_chunk(spec.options(), spec.payload, parts, [(1, 0), (0, 1)], ["c", "b"]).uids
    ['c', 'b']
    """
    ref_list: Sequence[tuple[int, int]] = refs.value if hasattr(refs, "value") else refs
    uid_list: list[Hashable] = list(uids.value if hasattr(uids, "value") else uids)
    function = cast(Callable[[pd.DataFrame], Any], load_function(payload))
    by_part: dict[int, tuple[list[int], list[int]]] = {}  # partition -> (indices into refs, offsets)
    for i, (part, offset) in enumerate(ref_list):
        indices, offsets = by_part.setdefault(part, ([], []))
        indices.append(i)
        offsets.append(offset)
    pieces = [parts[part].iloc[offsets] for part, (_, offsets) in by_part.items()]
    read_order = np.concatenate([np.asarray(indices) for indices, _ in by_part.values()])
    chunk = pd.concat(pieces) if len(pieces) > 1 else pieces[0]
    chunk = chunk.iloc[np.argsort(read_order, kind="stable")].reset_index(drop=True)  # as in refs
    column = options.uid_column
    wrong: list[int] = []
    if options.check_uid and column in chunk.columns:
        read = chunk[column].tolist()
        wrong = [i for i, (a, b) in enumerate(zip(read, uid_list, strict=True)) if not same_uid(a, b)]
    if not wrong:
        cast(Any, chunk)[column] = uid_list
        return _run(options, function, chunk, uid_list)
    outcomes: list[Any] = [None] * len(uid_list)
    for i in wrong:
        outcomes[i] = misread(read[i], uid_list[i], column)
    keep = np.flatnonzero(np.asarray([o is None for o in outcomes]))
    if len(keep):
        kept_uids = [uid_list[i] for i in keep.tolist()]
        rest = chunk.iloc[keep].reset_index(drop=True)
        cast(Any, rest)[column] = kept_uids
        for i, outcome in zip(keep.tolist(), as_rows(_run(options, function, rest, kept_uids)), strict=True):
            outcomes[i] = outcome
    return outcomes
