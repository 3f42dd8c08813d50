"""Result rows as the bytes of one Parquet file and back: the encoding of the persistent tier.

A result (``list[dict[str, Any]]``, see
:func:`~dask_reservoir._worker.produced.normalize_result`) becomes one Parquet
file with one Parquet row per produced row and one column per column name (the
union over the rows, in order of first appearance).  No pickle: ``pandas`` or
``dask.dataframe.read_parquet`` read it as they read any Parquet file.

Columns
    - Python ``bool``, ``int`` (int64 range), ``float``, ``str``, ``bytes`` and
      numpy scalars: one Arrow scalar of the matching type (``bool``, ``int64``,
      ``double``, ``string``, ``binary``, the numpy dtype's Arrow type).
    - numpy arrays: the values flattened in C order, in native byte order, as a
      ``fixed_size_list<T>[n]`` when every array of the column holds the same
      ``n > 0`` values, else as a ``list<T>`` (Parquet cannot hold a zero-size
      fixed list).
    - ``None``, or a column a row does not have: null.
    - complex values (Python or numpy, scalars or arrays): a list of
      interleaved real and imaginary parts.

    ``T`` is ``bool``, ``int8``..``uint64``, ``halffloat``/``float``/``double``,
    ``timestamp[unit]``/``duration[unit]`` for datetime64/timedelta64 of unit
    s, ms, us or ns (NaT kept as the int64 minimum, not as a null), ``int64``
    for other datetime64/timedelta64 units, ``string`` for ``U`` and ``binary``
    for ``S`` arrays.  All values of a column must share one Arrow type (nulls
    aside), else :func:`encode_rows` raises ``TypeError``.

Key-value metadata ``b"dask_reservoir"`` (JSON)
    ``{"format": 1, "rows": n, "columns": [{"name": str, "cells": [cell | null,
    ...one per row]}, ...], "order": [[column index, ...] per row], "checksum":
    hex}``, where a cell is ``{"k": kind}`` with kind ``none``, ``bool``, ``int``,
    ``float``, ``complex``, ``str`` or ``bytes`` (Python values), ``{"k":
    "numpy", "d": dtype.str}`` (numpy scalars) or ``{"k": "array", "d":
    dtype.str, "s": shape}``; ``order`` restores each row's keys in their order
    (a null cell: the row has no such key).  Shapes and dtypes are thus per row,
    so rows of one result may hold arrays of different shapes.  ``checksum`` is
    a blake2b digest of the canonical content (:func:`content_digest`): the
    reader recomputes it from the decoded values.  The pages carry CRC checksums.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "CorruptFile", "content_digest", "decode_rows", "encode_rows"]

FORMAT_VERSION = 1
"""Version of the layout above; a file of another version is corrupt to this reader."""
METADATA_KEY = b"dask_reservoir"
"""Parquet key-value metadata key of the JSON description."""

_TIME_UNITS = ("s", "ms", "us", "ns")
_PYTHON = {bool: "bool", int: "int", float: "float", complex: "complex", str: "str", bytes: "bytes"}
_PYTHON_DTYPES = {"bool": "|b1", "int": "<i8", "uint": "<u8", "float": "<f8", "complex": "<c16"}


class CorruptFile(ValueError):
    """Bytes that do not decode into the rows that were written; the message says why."""


class _Cell(NamedTuple):
    desc: dict[str, Any]
    flat: pa.Array | None  # the storage values; None for a null cell
    listed: bool


def _element_type(dtype: np.dtype[Any]) -> pa.DataType:
    """The Arrow type holding one element of ``dtype`` (complex: one of its two parts)."""
    kind = dtype.kind
    if kind in "biu" or (kind == "f" and dtype.itemsize in (2, 4, 8)):
        return pa.from_numpy_dtype(dtype.newbyteorder("="))
    if kind == "c" and dtype.itemsize in (8, 16):
        return pa.from_numpy_dtype(np.dtype(f"f{dtype.itemsize // 2}"))
    if kind in "mM":
        unit, count = np.datetime_data(dtype)
        if count == 1 and unit in _TIME_UNITS:
            return pa.timestamp(unit) if kind == "M" else pa.duration(unit)
        return pa.int64()
    if kind == "U":
        return pa.string()
    if kind == "S":
        return pa.binary()
    raise TypeError(f"numpy dtype {dtype.str} is not supported")


def _storage(values: np.ndarray) -> pa.Array:
    """The values of an array flattened (C order) into an Arrow array of their element type."""
    dtype = values.dtype
    target = _element_type(dtype)
    flat = values.reshape(-1).astype(dtype.newbyteorder("="), copy=False)
    if dtype.kind == "c":
        return pa.array(flat.view(np.dtype(f"f{dtype.itemsize // 2}")), type=target)
    if dtype.kind in "mM":
        return pa.array(flat.view(np.int64), type=pa.int64()).view(target)
    if dtype.kind in "US":  # through Python: pyarrow cuts numpy strings at their first NUL
        return pa.array(flat.tolist(), type=target)
    return pa.array(flat, type=target)


def _restore(flat: pa.Array, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``dtype`` and ``shape`` whose storage values are ``flat``."""
    if flat.type != _element_type(dtype) or flat.null_count:
        raise CorruptFile(f"values of type {flat.type} do not hold dtype {dtype.str}")
    native = dtype.newbyteorder("=")
    if dtype.kind in "US":
        values = np.array(flat.to_pylist(), dtype=dtype).reshape(-1)
    elif dtype.kind in "mM":
        values = flat.view(pa.int64()).to_numpy().view(native)
    elif dtype.kind == "c":
        values = flat.to_numpy().view(native)
    else:
        values = flat.to_numpy(zero_copy_only=False)
    return values.astype(dtype).reshape(shape)  # a copy: writable, owning its data


def _cell(value: Any, uid: Hashable, name: str) -> _Cell:
    """One value: its JSON description and its storage values."""
    kind = _PYTHON.get(type(value))
    try:
        if value is None:
            return _Cell({"k": "none"}, None, False)
        if isinstance(value, np.ndarray):
            desc = {"k": "array", "d": value.dtype.str, "s": list(value.shape)}
            return _Cell(desc, _storage(value), True)
        if isinstance(value, np.generic):
            desc = {"k": "numpy", "d": value.dtype.str}
            if value.dtype.kind in "US":
                return _Cell(desc, pa.array([value.item()], type=_element_type(value.dtype)), False)
            return _Cell(desc, _storage(np.asarray(value)), value.dtype.kind == "c")
        if kind in ("str", "bytes"):
            return _Cell(
                {"k": kind}, pa.array([value], type=pa.string() if kind == "str" else pa.binary()), False
            )
        if kind == "int" and 2**63 <= value < 2**64:
            kind = "uint"  # a uint64 hash UID, say: kept as uint64, read back as a Python int
        elif kind == "int" and not -(2**63) <= value < 2**63:
            raise TypeError("an int outside the int64 and uint64 ranges is not supported")
        if kind is not None:
            return _Cell({"k": kind}, _storage(np.array(value, _PYTHON_DTYPES[kind])), kind == "complex")
        raise TypeError("not a numpy array or scalar")
    except (TypeError, ValueError, pa.ArrowException) as error:
        module = type(value).__module__
        what = type(value).__qualname__ if module == "builtins" else f"{module}.{type(value).__qualname__}"
        raise TypeError(
            f"cannot cache column {name!r} of UID {uid!r}: a {what} "
            f"({error}); the result cache holds numpy arrays of numbers, bools, dates, durations or "
            "strings, numpy scalars and Python bool, int, float, complex, str, bytes or None only"
        ) from error


def _column(name: str, cells: list[_Cell | None], uid: Hashable) -> pa.Array:
    """One Parquet column from the cells of one column name (None: the row lacks it)."""
    full = [c for c in cells if c is not None and c.flat is not None]
    if not full:
        return pa.nulls(len(cells))
    kinds = {(c.flat.type, c.listed) for c in full if c.flat is not None}
    if len(kinds) > 1:
        raise TypeError(
            f"cannot cache column {name!r} of UID {uid!r}: its rows hold values of different Arrow types "
            f"{sorted(str(t) + (' list' if listed else '') for t, listed in kinds)}; the result cache holds "
            "one type per column"
        )
    element, listed = next(iter(kinds))
    mask = pa.array([c is None or c.flat is None for c in cells], type=pa.bool_())
    sizes = [0 if c is None or c.flat is None else len(c.flat) for c in cells]
    if not listed:
        return pa.concat_arrays(
            [pa.nulls(1, element) if c is None or c.flat is None else c.flat for c in cells]
        )
    size = max(sizes)
    if size > 0 and all(c.flat is not None and len(c.flat) == size for c in full):
        chunks = [pa.nulls(size, element) if c is None or c.flat is None else c.flat for c in cells]
        values = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
        return pa.FixedSizeListArray.from_arrays(values, size, mask=mask if mask.true_count else None)
    values = pa.concat_arrays([c.flat for c in full if c.flat is not None])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    if offsets[-1] >= 2**31:
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values, mask=mask)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)


def content_digest(rows: list[dict[str, Any]]) -> str:
    """The blake2b digest (hex) of the canonical content of ``rows``.

    Each value contributes its kind, its dtype and shape (numpy values) and its
    raw bytes (floats by their bits), each field length-prefixed, so equal
    digests mean equal values of equal types.

    Examples
    --------
    >>> content_digest([{"x": 1}]) == content_digest([{"x": 1}])
    True
    >>> content_digest([{"x": 1}]) == content_digest([{"x": 1.0}])
    False
    """
    digest = hashlib.blake2b(digest_size=32)

    def put(tag: bytes, *fields: bytes | memoryview) -> None:
        digest.update(tag)
        for data in fields:
            digest.update(struct.pack("<Q", len(data)))
            digest.update(data)

    put(b"rows", str(len(rows)).encode())
    for row in rows:
        put(b"row", str(len(row)).encode())
        for name, value in row.items():
            put(b"name", name.encode("utf-8", "surrogatepass"))
            if isinstance(value, np.ndarray):
                raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8).data
                put(b"array", value.dtype.str.encode(), repr(value.shape).encode(), raw)
            elif isinstance(value, np.generic):
                item = value.item() if value.dtype.kind in "US" else None
                raw_bytes = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
                put(
                    b"numpy",
                    value.dtype.str.encode(),
                    raw_bytes if raw_bytes is not None else value.tobytes(),
                )
            elif isinstance(value, str):
                put(b"str", value.encode("utf-8", "surrogatepass"))
            elif isinstance(value, bytes):
                put(b"bytes", value)
            elif isinstance(value, bool | float | complex) or value is None:
                put(type(value).__name__.encode(), np.array(value if value is not None else 0).tobytes())
            else:
                put(type(value).__name__.encode(), repr(value).encode())
    return digest.hexdigest()


def encode_rows(
    rows: list[dict[str, Any]], *, uid: Hashable, compression: str = "zstd", key: str | None = None
) -> bytes:
    """The Parquet file holding ``rows`` (the rows of the result of ``uid``), written for ``key``.

    Raises ``TypeError`` naming the UID, the column and the value's type for a
    value the file cannot hold faithfully.
    """
    names: dict[str, int] = {}
    for row in rows:
        for name in row:
            names.setdefault(name, len(names))
    cells: list[list[_Cell | None]] = [[None] * len(rows) for _ in names]
    for r, row in enumerate(rows):
        for name, value in row.items():
            cells[names[name]][r] = _cell(value, uid, name)
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError(
                f"cannot cache column {name!r} of UID {uid!r}: its name is not valid UTF-8"
            ) from None
    arrays = [_column(name, cells[i], uid) for name, i in names.items()]
    meta = {
        "format": FORMAT_VERSION,
        "rows": len(rows),
        "columns": [
            {"name": name, "cells": [None if c is None else c.desc for c in cells[i]]}
            for name, i in names.items()
        ],
        "order": [[names[name] for name in row] for row in rows],
        "checksum": content_digest(rows),
        "key": key,
    }
    table = pa.Table.from_arrays(arrays, names=list(names))
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, separators=(",", ":")).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, write_page_checksum=True, use_dictionary=False)
    return bytes(sink.getvalue())


def _value(column: pa.Array, r: int, desc: dict[str, Any]) -> Any:
    """The value of row ``r`` of ``column`` described by ``desc``."""
    kind = desc["k"]
    if kind == "none":
        if column.is_valid()[r].as_py():
            raise CorruptFile("a value where None was written")
        return None
    if column.is_null()[r].as_py():
        raise CorruptFile(f"a null where a {kind} was written")
    listed = any(
        test(column.type) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    )
    if listed != (kind in ("array", "complex") or (kind == "numpy" and np.dtype(desc["d"]).kind == "c")):
        raise CorruptFile(f"a column of type {column.type} where a {kind} was written")
    flat = column[r].values if listed else column.slice(r, 1)
    if kind == "array":
        return _restore(flat, np.dtype(desc["d"]), tuple(int(n) for n in desc["s"]))
    if kind == "numpy":
        dtype = np.dtype(desc["d"])
        if dtype.kind in "US":
            if flat.type != _element_type(dtype):
                raise CorruptFile(f"values of type {flat.type} do not hold dtype {dtype.str}")
            return (np.str_ if dtype.kind == "U" else np.bytes_)(flat[0].as_py())
        return _restore(flat, dtype, ())[()]
    if kind in ("str", "bytes"):
        value = flat[0].as_py()
        if type(value).__name__ != kind:
            raise CorruptFile(f"a {type(value).__name__} where a {kind} was written")
        return value
    item = _restore(flat, np.dtype(_PYTHON_DTYPES[kind]), ())[()].item()
    return {"bool": bool, "int": int, "uint": int, "float": float, "complex": complex}[kind](item)


def decode_rows(data: bytes, *, key: str | None = None) -> list[dict[str, Any]]:
    """The rows held by the Parquet file ``data``; raises :class:`CorruptFile` saying why not.

    ``key``: the key the file is read for; a file written for another key (moved or copied
    from another UID, source row or function) is refused.

    Examples
    --------
    >>> decode_rows(encode_rows([{"x": np.float32(2.5), "uid": 3}], uid=3))
    [{'x': np.float32(2.5), 'uid': 3}]
    >>> decode_rows(b"not parquet")
    Traceback (most recent call last):
    ...
    dask_reservoir._worker.cache.arrow_rows.CorruptFile: cannot be parsed: ...
    """
    try:
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True, use_threads=False)
    except Exception as error:  # anything while parsing bytes in memory: the bytes are wrong
        raise CorruptFile(f"cannot be parsed: {type(error).__name__}: {error}") from error
    try:
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise CorruptFile(f"no {METADATA_KEY.decode()} metadata")
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            version = meta.get("format") if isinstance(meta, dict) else None
            raise CorruptFile(f"unknown format version {version!r} (this reader knows {FORMAT_VERSION})")
        if key is not None and meta.get("key") != key:
            raise CorruptFile(
                f"written for the key {meta.get('key')!r}, read for {key!r}: a moved or copied file"
            )
        names = [column["name"] for column in meta["columns"]]
        if table.column_names != names or (names and table.num_rows != meta["rows"]):
            raise CorruptFile("the columns or rows differ from the metadata")
        if len(meta["order"]) != meta["rows"]:
            raise CorruptFile("the row count differs from the metadata")
        columns = [table.column(i).combine_chunks() for i in range(len(names))]
        rows = [
            {names[j]: _value(columns[j], r, meta["columns"][j]["cells"][r]) for j in order}
            for r, order in enumerate(meta["order"])
        ]
    except CorruptFile:
        raise
    except Exception as error:  # metadata or values that do not fit together
        raise CorruptFile(f"cannot be decoded: {type(error).__name__}: {error}") from error
    if content_digest(rows) != meta["checksum"]:
        raise CorruptFile("checksum mismatch: the values read differ from the values written")
    return rows
