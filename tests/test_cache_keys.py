"""Keys of the persistent tier: row and UID digests (canonical, the same in every process) and entry keys."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._worker.cache.keys import entry_key, row_digest, uid_digest

INT64 = st.integers(-(2**63) + 1, 2**63 - 1)  # -2**63 is NaT for datetime64 and timedelta64
TIMEZONES = ["UTC", "Europe/Paris", "America/New_York"]

# A canonical value is a hashable tuple; `represent` draws one of the objects that stand for it.
canonical_scalars = st.one_of(
    st.just(("none",)),
    st.just(("na",)),
    st.just(("nat",)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("int"), st.one_of(INT64, st.integers())),
    st.tuples(st.just("float"), st.floats(allow_nan=True, allow_infinity=True).map(float.hex)),
    st.tuples(st.just("str"), st.text(max_size=8)),
    st.tuples(st.just("bytes"), st.binary(max_size=8)),
    st.tuples(st.just("datetime"), st.sampled_from(["", *TIMEZONES]), st.integers(-(2**62), 2**62)),
    st.tuples(st.just("timedelta"), INT64),
    st.tuples(st.just("decimal"), st.decimals(allow_nan=False).map(str)),
)
canonical_values = st.recursive(
    canonical_scalars,
    lambda inner: st.tuples(st.sampled_from(["list", "tuple"]), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=6,
)
columns = st.text(alphabet="abcdefgh_", min_size=1, max_size=4)
canonical_rows = st.dictionaries(columns, canonical_values, max_size=5)


def represent(draw: st.DrawFn, canon: tuple[Any, ...]) -> Any:
    """An object standing for ``canon``: a Python or a numpy / pandas scalar of the same value."""
    kind, *payload = canon
    if kind == "none":
        return None
    if kind == "na":
        return pd.NA
    if kind == "nat":
        return draw(st.sampled_from([pd.NaT, np.datetime64("NaT"), np.timedelta64("NaT")]))
    if kind in ("list", "tuple"):
        items = [represent(draw, item) for item in payload[0]]
        return items if kind == "list" else tuple(items)
    (value, *rest) = payload
    options: list[Any]
    if kind == "bool":
        options = [value, np.bool_(value)]
    elif kind == "int":
        options = [value] + ([np.int64(value)] if -(2**63) <= value < 2**63 else [])
        options += [
            t(value)
            for t in (np.int8, np.int32, np.uint16, np.uint64)
            if np.iinfo(t).min <= value <= np.iinfo(t).max
        ]
    elif kind == "float":
        x = float.fromhex(value)
        with np.errstate(all="ignore"):  # float16(65520.0) overflows
            options = [x, np.float64(x)] + [t(x) for t in (np.float16, np.float32) if float(t(x)) == x]
    elif kind == "str":
        options = [value] + ([np.str_(value)] if not value.endswith("\0") else [])
    elif kind == "bytes":
        options = [value] + ([np.bytes_(value)] if not value.endswith(b"\0") else [])
    elif kind == "datetime":
        ns = rest[0]
        options = [pd.Timestamp(ns, unit="ns", tz=value or None)]
        if not value:
            options.append(np.datetime64(ns, "ns"))
            if ns % 10**9 == 0:
                options += [np.datetime64(ns // 10**9, "s"), pd.Timestamp(np.datetime64(ns // 10**9, "s"))]
            if ns % 1000 == 0:
                options.append(pd.Timestamp(ns, unit="ns").to_pydatetime())
    elif kind == "timedelta":
        options = [pd.Timedelta(value, unit="ns"), np.timedelta64(value, "ns")]
        if value % 1000 == 0:
            options.append(datetime.timedelta(microseconds=value // 1000))
    else:
        options = [decimal.Decimal(value)]
    return draw(st.sampled_from(options))


@st.composite
def rows(draw: st.DrawFn, canon: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a canonical row, a row standing for it, its columns in a drawn order)."""
    canon = draw(canonical_rows) if canon is None else canon
    order = draw(st.permutations(sorted(canon)))
    return canon, {column: represent(draw, canon[column]) for column in order}


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_the_digest_is_equal_iff_the_rows_are_canonically_equal(data: st.DataObject) -> None:
    canon, row = data.draw(rows())
    how = data.draw(st.sampled_from(["same", "one value", "independent"]))
    if how == "same":
        other_canon, other = data.draw(rows(canon))
    elif how == "one value" and canon:
        column = data.draw(st.sampled_from(sorted(canon)))
        other_canon, other = data.draw(rows({**canon, column: data.draw(canonical_values)}))
    else:
        other_canon, other = data.draw(rows())
    assert (row_digest(row) == row_digest(other)) == (canon == other_canon), (row, other)


@given(st.data())
def test_numpy_and_python_scalars_give_the_same_digest_and_types_differ(data: st.DataObject) -> None:
    canon = data.draw(canonical_scalars)
    a, b = represent(data.draw, canon), represent(data.draw, canon)
    assert uid_digest(a) == uid_digest(b) and row_digest({"c": a}) == row_digest({"c": b})


def test_values_that_compare_equal_in_python_differ_when_their_kind_differs() -> None:
    values = [1, 1.0, True, "1", b"1", decimal.Decimal(1), (1,), [1], np.array([1]), complex(1, 0)]
    assert len({row_digest({"a": v}) for v in values}) == len(values)
    assert len({uid_digest(v) for v in values}) == len(values)
    assert row_digest({"a": 0.0}) != row_digest({"a": -0.0})
    assert row_digest({"a": float("nan")}) == row_digest({"a": np.float32("nan")})
    assert row_digest({"a": 1}) != row_digest({"b": 1}) != row_digest({"a": 1, "b": None})


def test_dates_with_time_zones_durations_and_arrays() -> None:
    paris = pd.Timestamp("2024-03-01 12:00", tz="Europe/Paris")
    assert row_digest({"t": paris}) == row_digest({"t": paris.to_pydatetime()})
    assert row_digest({"t": paris}) != row_digest({"t": paris.tz_convert("UTC")})  # the same instant
    assert row_digest({"t": paris.tz_localize(None)}) == row_digest({"t": np.datetime64("2024-03-01T12:00")})
    assert row_digest({"t": np.datetime64("2024-03", "M")}) == row_digest({"t": np.datetime64("2024-03-01")})
    assert row_digest({"d": pd.Timedelta("1s")}) == row_digest({"d": np.timedelta64(1000, "ms")})
    assert row_digest({"d": pd.Timedelta("1s")}) != row_digest({"d": pd.Timedelta("1ms")})
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert row_digest({"x": image}) == row_digest({"x": image.copy(order="F")})
    for other in (image.reshape(4, 3), image.astype(np.int16), image + 1):
        assert row_digest({"x": image}) != row_digest({"x": other})
    objects = np.array(["a", 1, None], dtype=object)
    assert row_digest({"x": objects}) != row_digest({"x": np.array(["a", 2, None], dtype=object)})
    assert row_digest({"m": {"b": [1, 2], "a": {3}}}) == row_digest({"m": {"a": {3}, "b": [1, 2]}})


def test_a_value_of_an_unknown_type_raises_naming_its_column() -> None:
    with pytest.raises(TypeError, match=r"column 'img'.*builtins\.object"):
        row_digest({"a": 1, "img": object()})
    with pytest.raises(TypeError, match=r"column 'nested'.*builtins\.object"):
        row_digest({"nested": [1, (2, object())]})
    with pytest.raises(TypeError, match="UID"):
        uid_digest(object())


ROWS = [
    {"path": "a.png", "label": 3, "w": 0.5},
    {"when": pd.Timestamp("2024-01-01", tz="Europe/Paris"), "d": pd.Timedelta("3h"), "n": None},
    {"tags": {"cat", "dog", "bird", "fish"}, "meta": {"zeta": 1, "alpha": [1.5, "x"], "mid": b"\x00"}},
    {"big": 2**100, "nan": float("nan"), "na": pd.NA, "nat": pd.NaT, "dec": decimal.Decimal("1.10")},
    {"arr": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.str_("é"), "i": np.int16(-7)},
]
SCRIPT = """
import decimal, json, sys
import numpy as np, pandas as pd
from dask_reservoir._worker.cache.keys import row_digest, uid_digest
ROWS = {rows}
print(json.dumps([[row_digest(r) for r in ROWS], [uid_digest(u) for u in (7, "7", ("a", 1), b"x")]]))
"""


def test_digests_are_the_same_in_another_process() -> None:
    import inspect

    source = inspect.getsource(sys.modules[__name__]).split("ROWS = ", 1)[1].split("\nSCRIPT", 1)[0]
    here = [[row_digest(r) for r in ROWS], [uid_digest(u) for u in (7, "7", ("a", 1), b"x")]]
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(rows=source)],
            check=True,
            capture_output=True,
            timeout=60,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(done.stdout) == here


uids = st.one_of(
    st.integers(), st.text(), st.binary(), st.tuples(st.integers(), st.text()), INT64.map(np.int64)
)


@given(
    uids,
    st.one_of(st.none(), st.just(row_digest({"a": 1}))),
    st.sampled_from(["0" * 32, "0123456789abcdef" * 2]),
)
def test_entry_keys_are_path_safe(uid: Any, row: str | None, fingerprint: str) -> None:
    key = entry_key(uid, row, fingerprint)
    assert re.fullmatch(r"[0-9a-z/-]+", key)
    head, prefix, leaf = key.split("/")
    u = uid_digest(uid)
    assert (head, prefix, leaf) == (fingerprint, u[:2], f"{u}-{row or 'any'}")


def test_entry_keys_refuse_what_is_not_a_digest() -> None:
    assert entry_key(np.int64(5), None, "ab") == entry_key(5, None, "ab")
    assert entry_key(5, None, "ab") != entry_key("5", None, "ab")
    for fingerprint, row in [("../etc", None), ("", None), ("AB", None), ("ab", "x/y"), ("ab", "")]:
        with pytest.raises(ValueError, match="hexadecimal"):
            entry_key(1, row, fingerprint)
