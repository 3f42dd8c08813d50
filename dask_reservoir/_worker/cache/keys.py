"""Keys of the persistent tier: digests of UIDs and source rows, and where an entry goes.

A result is kept under :func:`entry_key`: the function's fingerprint, then the digest of the
row's UID (:func:`uid_digest`) and of the source row (:func:`row_digest`).  The digests use a
canonical, type-tagged encoding, the same in every process and Python run: a value read back as
a numpy scalar in one process and as a Python scalar in another gives the same digest
(``numpy.int64(3)`` and ``3``), while values of different kinds differ (``3`` and ``3.0``).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["entry_key", "pack", "row_digest", "uid_digest"]

_HEX = frozenset("0123456789abcdef")
_EPOCH = datetime.datetime(1970, 1, 1)
# Attoseconds per numpy time unit (Y and M are calendar units, converted to days first).
_ATTOSECONDS = {
    "W": 7 * 86400 * 10**18,
    "D": 86400 * 10**18,
    "h": 3600 * 10**18,
    "m": 60 * 10**18,
    "s": 10**18,
    "ms": 10**15,
    "us": 10**12,
    "μs": 10**12,
    "ns": 10**9,
    "ps": 10**6,
    "fs": 10**3,
    "as": 1,
}


def row_digest(record: Mapping[str, Any]) -> str:
    """A digest of a source row (column -> value), the same in every process.

    Columns are sorted by name; values use a type-tagged encoding where numpy and Python
    scalars of the same value agree.  Supported values: None, bool, int, float (NaN, -0.0),
    complex, str, bytes, numpy scalars and arrays, ``pandas.Timestamp`` (with its time zone),
    ``pandas.Timedelta``, ``pandas.NaT``, ``pandas.NA``, ``decimal.Decimal``, ``datetime``
    objects, and tuples, lists, dicts and sets of these.

    Raises
    ------
    TypeError
        For a value of another type, naming its column and type.

    Examples
    --------
    >>> row_digest({"a": 1, "b": "x"}) == row_digest({"b": np.str_("x"), "a": np.int64(1)})
    True
    >>> row_digest({"a": 1}) == row_digest({"a": 1.0})
    False
    >>> row_digest({"path": "a.png", "label": 3})
    '6b3e1cfab747854214317e2b94b4561b'
    """
    entries = []
    for column, value in record.items():
        try:
            entries.append((_encode(column), _encode(value)))
        except TypeError as exc:
            raise TypeError(f"cannot digest column {column!r} of the source row: {exc}") from None
    h = hashlib.blake2b(digest_size=16, person=b"dask_res.row")
    h.update(len(entries).to_bytes(8, "big"))
    for key, value_bytes in sorted(entries):
        h.update(key)
        h.update(value_bytes)
    return h.hexdigest()


def uid_digest(uid: Hashable) -> str:
    """A digest of a UID, with the encoding of :func:`row_digest`.

    Examples
    --------
    >>> uid_digest(7) == uid_digest(np.int64(7)), uid_digest(7) == uid_digest("7")
    (True, False)
    """
    try:
        encoded = _encode(uid)
    except TypeError as exc:
        raise TypeError(f"cannot digest the UID {uid!r}: {exc}") from None
    return hashlib.blake2b(encoded, digest_size=16, person=b"dask_res.uid").hexdigest()


def entry_key(uid: Hashable, row: str | None, fingerprint: str) -> str:
    """The relative key of a result: ``"{fingerprint}/{u[:2]}/{u}-{row or 'any'}"``.

    ``u`` is :func:`uid_digest` of ``uid``; ``row`` is a :func:`row_digest` or None when the
    source row is not part of the key.  Made of ``[0-9a-z/-]`` only, without an extension.

    Raises
    ------
    ValueError
        When ``fingerprint`` or ``row`` is not lowercase hexadecimal.

    Examples
    --------
    >>> entry_key(7, None, "f" * 32)
    'ffffffffffffffffffffffffffffffff/cf/cf352a1da661bcfd706750a09ed6d4cf-any'
    """
    for name, value in (("fingerprint", fingerprint), ("row", row)):
        if value is not None and not (value and isinstance(value, str) and _HEX.issuperset(value)):
            raise ValueError(f"{name} must be a lowercase hexadecimal digest, got {value!r}")
    u = uid_digest(uid)
    return f"{fingerprint}/{u[:2]}/{u}-{row or 'any'}"


def pack(tag: str, *parts: bytes) -> bytes:
    """A self-delimiting encoding: the tag, the number of parts, each part with its length (keys and fingerprints)."""
    out = bytearray(tag.encode())
    out += b"\0" + len(parts).to_bytes(4, "big")
    for part in parts:
        out += len(part).to_bytes(8, "big") + part
    return bytes(out)


def _int(value: int) -> bytes:
    return str(value).encode()


def _float(value: float) -> bytes:
    return pack("float", float(value).hex().encode())  # every NaN is 'nan'; -0.0 is not 0.0


def _encode(value: Any) -> bytes:
    """The canonical encoding of one value (see :func:`row_digest`)."""
    if value is None:
        return pack("none")
    if value is pd.NA:
        return pack("na")
    if value is pd.NaT:
        return pack("nat")
    if isinstance(value, (np.datetime64, np.timedelta64)):  # before int: timedelta64 is a numpy integer
        return _numpy_time(value)
    if isinstance(value, (bool, np.bool_)):
        return pack("bool", b"1" if value else b"0")
    if isinstance(value, (int, np.integer)):
        return pack("int", _int(int(value)))
    if isinstance(value, np.longdouble) and not np.isnan(value) and float(value) != value:
        return pack("longdouble", repr(value).encode())  # more precise than a float
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, (complex, np.complexfloating)):
        z = complex(value)
        return pack("complex", z.real.hex().encode(), z.imag.hex().encode())
    if isinstance(value, (str, np.str_)):
        return pack("str", str(value).encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, np.bytes_)):
        return pack("bytes", bytes(value))
    return _encode_other(value)


def _encode_other(value: Any) -> bytes:
    """The canonical encoding of dates, durations, decimals, arrays and containers."""
    if isinstance(value, pd.Timestamp):
        tz = "" if value.tzinfo is None else str(value.tzinfo)
        return pack("datetime", tz.encode(), _int(_attoseconds(value.to_datetime64())))
    if isinstance(value, pd.Timedelta):
        return pack("timedelta", _int(_attoseconds(value.to_timedelta64())))
    if isinstance(value, datetime.datetime):
        offset = value.utcoffset()
        naive = value.replace(tzinfo=None) - (offset or datetime.timedelta(0))
        tz = "" if value.tzinfo is None else str(value.tzinfo)
        return pack("datetime", tz.encode(), _int(_timedelta_attoseconds(naive - _EPOCH)))
    if isinstance(value, datetime.timedelta):
        return pack("timedelta", _int(_timedelta_attoseconds(value)))
    if isinstance(value, (datetime.date, datetime.time)):
        tz = str(value.tzinfo) if isinstance(value, datetime.time) and value.tzinfo else ""
        return pack(type(value).__name__, value.isoformat().encode(), tz.encode())
    if isinstance(value, decimal.Decimal):
        return pack("decimal", str(value).encode())
    if isinstance(value, np.void):
        return pack("void", _dtype(value.dtype), value.tobytes())
    if isinstance(value, np.ndarray):
        head = [_dtype(value.dtype), repr(value.shape).encode()]
        if value.dtype.hasobject or value.dtype.kind == "T":  # objects, StringDType: element by element
            return pack("ndarray", *head, *(_encode(v) for v in value.ravel()))
        return pack("ndarray", *head, np.ascontiguousarray(value).tobytes())
    if isinstance(value, (list, tuple)):
        return pack(type(value).__name__, *(_encode(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return pack("set", *sorted(_encode(v) for v in value))
    if isinstance(value, dict):
        pairs = sorted((_encode(k), _encode(v)) for k, v in value.items())
        return pack("dict", *(part for pair in pairs for part in pair))
    raise TypeError(f"values of type {type(value).__module__}.{type(value).__qualname__} are not supported")


def _dtype(dtype: np.dtype[Any]) -> bytes:
    return (dtype.str + (repr(dtype.descr) if dtype.names else "")).encode()


def _timedelta_attoseconds(delta: datetime.timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 10**18 + delta.microseconds * 10**12


def _attoseconds(value: np.datetime64 | np.timedelta64) -> int:
    """A numpy date or duration as attoseconds since the epoch (Y, M: calendar, via days)."""
    unit, count = np.datetime_data(value.dtype)
    if unit in ("Y", "M") and isinstance(value, np.datetime64):
        value, unit, count = value.astype("datetime64[D]"), "D", 1
    return int(value.astype(np.int64)) * count * _ATTOSECONDS[unit]


def _numpy_time(value: np.datetime64 | np.timedelta64) -> bytes:
    if np.isnat(value):
        return pack("nat")
    unit, count = np.datetime_data(value.dtype)
    if isinstance(value, np.timedelta64):
        if unit == "generic":  # np.timedelta64(5): a number without a unit
            return pack("timedelta-generic", _int(int(value.astype(np.int64))))
        if unit in ("Y", "M"):  # a number of years or months: no fixed length
            return pack(
                "timedelta-months", _int(int(value.astype(np.int64)) * count * (12 if unit == "Y" else 1))
            )
        return pack("timedelta", _int(_attoseconds(value)))
    return pack("datetime", b"", _int(_attoseconds(value)))
