"""Checking and normalising what function_to_run returned (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_reservoir import JobError
from dask_reservoir._worker.produced import normalize_result


def test_normalize_forms() -> None:
    assert normalize_result({"a": 1}, "u", "uid") == [{"a": 1, "uid": "u"}]
    assert normalize_result([{"a": 1}, {"a": 2}], 5, "uid") == [{"a": 1, "uid": 5}, {"a": 2, "uid": 5}]
    assert normalize_result(pd.DataFrame({"a": [1, 2]}), 5, "uid") == [{"a": 1, "uid": 5}, {"a": 2, "uid": 5}]
    assert normalize_result([], 5, "uid") == [] and normalize_result(pd.DataFrame(), 5, "uid") == []


def test_normalize_does_not_mutate_user_dict() -> None:
    row = {"a": 1}
    normalize_result(row, 9, "uid")
    assert row == {"a": 1}


@pytest.mark.parametrize(
    "result, match",
    [
        (None, "got NoneType for UID 7"),
        (3, "got int for UID 7"),
        ("text", "got str for UID 7"),
        ({1: 2}, "non-str key 1 .int. for UID 7"),
        ([{"a": 1}, 5], "list holding a int at index 1 for UID 7"),
        ({"a": np.array([1, "x", None], dtype=object)}, "column 'a' as an object-dtype array for UID 7"),
    ],
)
def test_normalize_rejects(result: object, match: str) -> None:
    with pytest.raises(JobError, match=match) as info:
        normalize_result(result, 7, "uid")
    assert info.value.uid == 7


def test_uid_column_from_the_function_must_match() -> None:
    assert normalize_result({"uid": 7, "a": 1}, 7, "uid") == [{"uid": 7, "a": 1}]  # equal: fine
    with pytest.raises(JobError, match=r"returned 8 in the UID column 'uid' \(row 1\) for UID 7") as info:
        normalize_result([{"uid": 7}, {"uid": 8}], 7, "uid")
    assert info.value.uid == 7
