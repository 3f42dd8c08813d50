"""The result files of the persistent tier: Parquet round trips, corruption, atomic writes, the probe (pure)."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_reservoir._worker.cache.files import CacheFiles

KEY = "3fa9/ab/ab12-c0ffee"
METADATA_KEY = b"dask_reservoir"  # the format's key, spelled out


@pytest.fixture(params=["local", "memory"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheFiles]:
    """A CacheFiles on a local directory, or on a memory:// prefix of its own (cleared afterwards)."""
    if request.param == "local":
        yield CacheFiles(tmp_path / "cache")
        return
    prefix = f"/test-cache-files-{uuid.uuid4().hex}"
    yield CacheFiles(f"memory://{prefix}")
    memory = fsspec.filesystem("memory")
    for path in [p for p in memory.store if p.startswith(prefix)]:
        del memory.store[path]
    memory.pseudo_dirs[:] = [d for d in memory.pseudo_dirs if not d.startswith(prefix)]


def same(a: Any, b: Any) -> bool:
    """Exactly equal: same types, dtypes (byte order included), shapes and bits (NaN included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype.str == b.dtype.str and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.str_ | np.bytes_):
        return a.dtype.str == b.dtype.str and a.item() == b.item()
    if isinstance(a, np.generic):
        return a.dtype.str == b.dtype.str and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return struct.pack("<dd", a.real, a.imag) == struct.pack("<dd", b.real, b.imag)
    return bool(a == b)


def test_same_sees_differences() -> None:
    """The comparison of the round trips tells dtypes, byte orders, types and NaN positions apart."""
    x = np.array([1.0, np.nan])
    assert same([{"x": x}], [{"x": x.copy()}])
    assert not same([{"x": x}], [{"x": x.astype(">f8")}])
    assert not same([{"x": x}], [{"x": np.array([np.nan, 1.0])}])
    assert not same({"x": 1}, {"x": np.int64(1)}) and not same({"x": np.float32(1)}, {"x": np.float64(1)})
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=5)
DTYPES = [">f8", "<f8", "<f4", "<f2", "|b1", "<M8[ns]", "<M8[D]", "<m8[us]", "|i1", "<i2", ">i4", "<i8"]
DTYPES += ["|u1", "<u2", "<u4", "<u8", "<U5", "|S3", "<c8", ">c16"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


def elements(dtype: np.dtype[Any]) -> st.SearchStrategy[Any] | None:
    if dtype.kind == "U":  # numpy drops trailing NULs
        return TEXT.map(lambda text: text.rstrip("\x00"))
    if dtype.kind == "S":
        return st.binary(max_size=3).map(lambda data: data.rstrip(b"\x00"))
    return None


@st.composite
def column_values(draw: st.DrawFn) -> st.SearchStrategy[Any]:
    """A strategy of the values of one column: one family of values (arrays of one dtype, ...)."""
    family = draw(st.sampled_from(["array", "numpy", "python"]))
    if family == "python":
        return draw(
            st.sampled_from(
                [
                    st.booleans(),
                    st.integers(-(2**63), 2**63 - 1),
                    st.floats(),
                    st.complex_numbers(),
                    TEXT,
                    st.binary(max_size=8),
                ]
            )
        )
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if family == "numpy":
        return hnp.arrays(dtype, (), elements=elements(dtype)).map(lambda a: a[()])
    return hnp.arrays(dtype, SHAPES, elements=elements(dtype))


@st.composite
def results(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Several rows: per column one family of values, each row holding one, None or no such column."""
    n_rows = draw(st.integers(0, 3))
    columns = {f"c{i}": draw(column_values()) for i in range(draw(st.integers(0, 4)))}
    uid = draw(st.sampled_from([5, "uid-5", np.int64(5)]))
    rows = []
    for _ in range(n_rows):
        row: dict[str, Any] = {}
        for name, values in columns.items():
            choice = draw(st.sampled_from(["value", "value", "value", "none", "absent"]))
            if choice != "absent":
                row[name] = None if choice == "none" else draw(values)
        row["sample_uid"] = uid
        if draw(st.booleans()):
            row = dict(reversed(list(row.items())))
        rows.append(row)
    return rows


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=results())
def test_round_trip(files: CacheFiles, rows: list[dict[str, Any]]) -> None:
    key = f"rt/{uuid.uuid4().hex}"
    size = files.write(key, rows, uid=5)
    back = files.read(key)
    assert back is not None
    assert same(back[0], rows), (back[0], rows)
    assert back[1] == size == files.fs.size(files.path(key))


def test_round_trip_examples(files: CacheFiles) -> None:
    """The kinds named by the format, with arrays of different shapes in rows of one result."""
    big = np.arange(24, dtype=">f8").reshape(2, 3, 4)
    big[1, 2, 3] = np.nan
    rows = [
        {
            "image": big,
            "label": np.array(["ab", "\x00c\x00e"], "<U5"),  # pyarrow alone cuts numpy strings at a NUL
            "raw": np.array([b"\x00a", b""], "S2"),
            "when": np.array(["2020-01-01", "NaT"], "datetime64[ns]"),
            "half": np.float16(1.5),
            "mask": np.zeros((0, 3), bool),
            "i": 1,
            "f": float("nan"),
            "s": "é",
            "b": b"\x00",
            "n": None,
            "sample_uid": 7,
        },
        {"image": np.array(2.0, ">f8"), "label": np.array("x", "<U1"), "sample_uid": 7},
        {"image": np.zeros(5, ">f8"), "i": np.int64(3), "sample_uid": 7},
    ]
    files.write(KEY, rows, uid=7)
    back = files.read(KEY)
    assert back is not None and same(back[0], rows)
    assert back[0][0]["image"].flags.writeable


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(files: CacheFiles, dtype: str) -> None:
    """Each dtype: a 0-d, an empty and a 3-D array and a scalar, with NaN/NaT where the dtype has one."""
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 120, (2, 3, 4)).astype(dtype)
    if cube.dtype.kind in "fcmM":
        cube.reshape(-1)[[1, 5]] = np.array(["NaT" if cube.dtype.kind in "mM" else "nan"]).astype(dtype)[0]
    rows = [
        {"a": cube, "s": cube.reshape(-1)[1], "sample_uid": 1},
        {"a": cube[0, 0, 0:1].reshape(()), "s": cube.reshape(-1)[2], "sample_uid": 1},
        {"a": cube[:0], "sample_uid": 1},
    ]
    files.write(KEY, rows, uid=1)
    back = files.read(KEY)
    assert back is not None and same(back[0], rows), back


def test_uniform_arrays_are_fixed_size_lists(tmp_path: Path) -> None:
    files = CacheFiles(tmp_path)
    files.write(KEY, [{"x": np.ones((2, 3), np.float32), "u": 1}] * 2, uid=1)
    files.write(
        "other", [{"x": np.ones((2, 3), np.float32), "u": 1}, {"x": np.ones(2, np.float32), "u": 1}], uid=1
    )
    assert pq.read_schema(files.path(KEY)).field("x").type == pa.list_(pa.float32(), 6)
    assert pq.read_schema(files.path("other")).field("x").type == pa.list_(pa.float32())


def test_miss(files: CacheFiles) -> None:
    assert files.read(KEY) is None
    assert files.read("not/written") is None


def test_readable_by_pandas(tmp_path: Path) -> None:
    files = CacheFiles(str(tmp_path))
    rows: list[dict[str, Any]] = [
        {"image": np.arange(6, dtype=np.float32).reshape(2, 3), "label": 3, "sample_uid": "a"}
    ] * 3
    files.write(KEY, rows, uid="a")
    frame = pd.read_parquet(files.path(KEY))
    assert list(frame.columns) == ["image", "label", "sample_uid"] and len(frame) == 3
    assert list(frame["label"]) == [3, 3, 3] and list(frame["sample_uid"]) == ["a"] * 3
    np.testing.assert_array_equal(
        np.stack([np.asarray(x) for x in frame["image"]]).reshape(3, 2, 3),
        np.stack([r["image"] for r in rows]),
    )
    meta = json.loads(pq.read_schema(files.path(KEY)).metadata[METADATA_KEY])
    assert meta["format"] == 1 and meta["columns"][0]["cells"][0] == {"k": "array", "d": "<f4", "s": [2, 3]}


def _rewrite(files: CacheFiles, change: Any) -> None:
    """Write the file of KEY again with its metadata changed by ``change(meta)``."""
    path = files.path(KEY)
    table = pq.read_table(io.BytesIO(files.fs.cat_file(path)))
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    change(meta)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    files.fs.pipe_file(path, sink.getvalue())


def _flip_in_column(data: bytes) -> bytes:
    """Flip one byte in the middle of the first column's data page."""
    column = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0)
    where = column.data_page_offset + column.total_compressed_size // 2
    return data[:where] + bytes([data[where] ^ 0x40]) + data[where + 1 :]


def _set(meta: dict[str, Any], key: str, value: Any) -> None:
    meta[key] = value


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "flipped",
        "garbage",
        "checksum",
        "version",
        "shape",
        "no metadata",
    ],
)
def test_corrupt_files_are_misses(files: CacheFiles, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    rows = [{"x": np.random.default_rng(1).random(4000), "sample_uid": 3}]
    files.write(KEY, rows, uid=3)
    path = files.path(KEY)
    data = files.fs.cat_file(path)
    if damage == "truncated":
        files.fs.pipe_file(path, data[: len(data) // 2])
    elif damage == "flipped":
        files.fs.pipe_file(path, _flip_in_column(data))
    elif damage == "garbage":
        files.fs.pipe_file(path, b"PAR1" + os.urandom(500) + b"PAR1")
    elif damage == "checksum":
        _rewrite(files, lambda meta: _set(meta, "checksum", "0" * 64))
    elif damage == "version":
        _rewrite(files, lambda meta: _set(meta, "format", 2))
    elif damage == "shape":
        _rewrite(files, lambda meta: meta["columns"][0]["cells"][0].update(s=[2, 2000]))
    else:
        _rewrite(files, lambda meta: meta.clear())
    with caplog.at_level(logging.WARNING, logger="dask_reservoir"):
        assert files.read(KEY) is None
    assert not files.fs.exists(path)
    [record] = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert (
        record.levelno == logging.WARNING and record.name == "dask_reservoir" and path in record.getMessage()
    )
    files.write(KEY, rows, uid=3)
    back = files.read(KEY)
    assert back is not None and same(back[0], rows)


def test_page_checksums_are_written(tmp_path: Path) -> None:
    """A flipped byte in a data page is caught by Parquet's page checksum, before the content digest."""
    files = CacheFiles(tmp_path)
    files.write(KEY, [{"x": np.arange(4000.0), "sample_uid": 3}], uid=3)
    data = _flip_in_column(Path(files.path(KEY)).read_bytes())
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(io.BytesIO(data), page_checksum_verification=True)


@pytest.mark.parametrize(
    "value, what",
    [
        (np.array([1, "x"], dtype=object), "numpy.ndarray"),
        ([1, 2], "list"),
        ({"a": 1}, "dict"),
        (object(), "object"),
        (2**64, "int .an int outside the int64 and uint64 ranges"),
        (-(2**63) - 1, "int .an int outside the int64 and uint64 ranges"),
        (np.zeros(2, "V4"), "numpy.ndarray"),
        (np.array(["\ud800"]), "numpy.ndarray"),
        (pd.Timestamp("2020-01-01"), "Timestamp"),
    ],
)
def test_unsupported_values(files: CacheFiles, value: Any, what: str) -> None:
    with pytest.raises(TypeError, match=rf"column 'bad' of UID 'uid-9': a .*{what}.*numpy arrays") as info:
        files.write(KEY, [{"ok": 1, "bad": value, "sample_uid": "uid-9"}], uid="uid-9")
    assert "numpy scalars" in str(info.value)
    assert files.read(KEY) is None


def test_mixed_types_in_a_column(files: CacheFiles) -> None:
    with pytest.raises(
        TypeError, match=r"column 'x' of UID 4: its rows hold values of different Arrow types"
    ):
        files.write(KEY, [{"x": 1}, {"x": "one"}], uid=4)
    with pytest.raises(TypeError, match=r"column 'x' of UID 4"):
        files.write(KEY, [{"x": np.float32(1)}, {"x": np.zeros(2, np.float32)}], uid=4)


def test_bad_keys(files: CacheFiles) -> None:
    for key in ["../x", "/x", "a//b", "A", "a.parquet", ""]:
        with pytest.raises(ValueError, match="cache key"):
            files.path(key)


def test_no_temporary_files_left(tmp_path: Path) -> None:
    files = CacheFiles(tmp_path)
    for _ in range(3):
        files.write(KEY, [{"x": np.zeros(3), "sample_uid": 1}], uid=1)
    assert [p.name for p in Path(files.path(KEY)).parent.iterdir()] == ["ab12-c0ffee.parquet"]
    with pytest.raises(TypeError):
        files.write("ab/cd", [{"x": object()}], uid=1)
    assert not (tmp_path / "ab").exists()


def test_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = CacheFiles(tmp_path)

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        files.write(KEY, [{"x": 1}], uid=1)
    assert list(Path(files.path(KEY)).parent.iterdir()) == []


def test_concurrent_writers_and_a_reader(files: CacheFiles, caplog: pytest.LogCaptureFixture) -> None:
    """Two writers of one key and a reader: every read is a miss or the exact rows, never a partial file."""
    rows_a = [{"x": np.random.default_rng(0).random((64, 64)), "sample_uid": 1}]
    rows_b = [{"x": np.random.default_rng(1).random((64, 64)), "sample_uid": 1}, {"y": 2, "sample_uid": 1}]
    done = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def write(rows: list[dict[str, Any]]) -> None:
        try:
            for _ in range(50):
                files.write(KEY, rows, uid=1)
        except BaseException as error:
            errors.append(error)

    def read() -> None:
        try:
            while not done.is_set():
                got = files.read(KEY)
                if got is None:
                    seen.append("miss")
                else:
                    assert same(got[0], rows_a) or same(got[0], rows_b)
                    seen.append("a" if len(got[0]) == 1 else "b")
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=write, args=(rows,)) for rows in (rows_a, rows_b)]
    reader = threading.Thread(target=read)
    for thread in [reader, *writers]:
        thread.start()
    with caplog.at_level(logging.WARNING, logger="dask_reservoir"):
        for thread in writers:
            thread.join()
        done.set()
        reader.join()
    assert not errors, errors
    assert not [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(seen) > 1 and set(seen) <= {"miss", "a", "b"}
    final = files.read(KEY)
    assert final is not None and (same(final[0], rows_a) or same(final[0], rows_b))
    if files.local:
        assert [p.name for p in Path(files.path(KEY)).parent.iterdir()] == ["ab12-c0ffee.parquet"]


def test_pickle(files: CacheFiles) -> None:
    files.write(KEY, [{"x": 1}], uid=1)
    data = pickle.dumps(files)
    assert b"FileSystem" not in data and len(data) < 300
    again = pickle.loads(data)
    assert (again.url, again.root, again.local, again.storage_options) == (
        files.url,
        files.root,
        files.local,
        files.storage_options,
    )
    assert again.read(KEY) == ([{"x": 1}], files.fs.size(files.path(KEY)))


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = CacheFiles("cache")
    assert (
        relative.url == str(tmp_path / "cache")
        and relative.local
        and relative.root == str(tmp_path / "cache")
    )
    assert CacheFiles(f"file://{tmp_path}/c/").root == f"{tmp_path}/c"
    assert CacheFiles(f"file://{tmp_path}/c/").path("k") == f"{tmp_path}/c/k.parquet"
    memory = CacheFiles("memory://bucket/cache", storage_options={})
    assert not memory.local and memory.path("k") == "/bucket/cache/k.parquet"


def test_probe(files: CacheFiles, tmp_path: Path) -> None:
    token = files.write_probe()
    assert len(token) == 32 and int(token, 16) >= 0
    assert CacheFiles(files.url).sees_probe(token)
    assert pickle.loads(pickle.dumps(files)).sees_probe(token)
    assert not CacheFiles(tmp_path / "elsewhere").sees_probe(token)
    assert not CacheFiles(f"memory://other-{uuid.uuid4().hex}").sees_probe(token)
    assert not files.sees_probe(uuid.uuid4().hex)
    files.remove_probe(token)
    assert not files.sees_probe(token)
    files.remove_probe(token)
    with pytest.raises(ValueError, match="probe token"):
        files.sees_probe("../x")


def test_a_python_int_of_the_uint64_range_comes_back_as_itself(files: CacheFiles) -> None:
    big = 2**63 + 5  # a uint64 hash UID, as the library puts it in the UID column
    files.write(KEY, [{"sample_uid": big, "x": np.arange(3)}], uid=big)
    got = files.read(KEY)
    assert got is not None
    (row,), _ = got
    assert type(row["sample_uid"]) is int and row["sample_uid"] == big


def test_a_file_moved_to_another_key_is_refused(files: CacheFiles, caplog: pytest.LogCaptureFixture) -> None:
    other = KEY.rsplit("-", 1)[0] + "-" + "0" * 32
    files.write(KEY, [{"sample_uid": 1, "x": np.arange(3)}], uid=1)
    files.fs.pipe_file(files.path(other), files.fs.cat_file(files.path(KEY)))  # the same UID, another row
    with caplog.at_level(logging.WARNING, logger="dask_reservoir"):
        assert files.read(other) is None
    assert "a moved or copied file" in caplog.text and files.read(KEY) is not None
