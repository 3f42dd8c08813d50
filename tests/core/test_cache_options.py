"""The persistent tier's options: checked with errors naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dask_reservoir._core.cache_options import check_cache

GOOD: dict[str, Any] = {
    "cache": None,
    "cache_version": None,
    "cache_row_hash": True,
    "cache_storage_options": None,
}


def check(*, batched: bool = False, **given: Any) -> dict[str, Any]:
    return check_cache({**GOOD, **given}, batched=batched)


def test_defaults_and_good_values() -> None:
    assert check() == GOOD
    got = check(
        cache=Path("/tmp/c"), cache_version="v2", cache_row_hash=False, cache_storage_options={"anon": True}
    )
    assert got == {"cache": "/tmp/c", "cache_version": "v2", "cache_row_hash": False,
                   "cache_storage_options": {"anon": True}}  # fmt: skip
    options = {"key": "x"}
    assert check(cache="s3://b/p", cache_storage_options=options)["cache_storage_options"] is not options


@pytest.mark.parametrize(
    "given, batched, error, message",
    [
        (
            {"cache": 3},
            False,
            TypeError,
            r"^cache must be a path, an fsspec URL \(str\) or None, got int: 3$",
        ),
        ({"cache": ""}, False, ValueError, r"^cache must be a non-empty path or URL, got ''$"),
        (
            {"cache": "/c"},
            True,
            ValueError,
            r"^cache= keeps the result of each source row.*got cache='/c' with batched=True$",
        ),
        (
            {"cache": "/c", "cache_version": 2},
            False,
            TypeError,
            r"^cache_version must be a str or None, got int: 2$",
        ),
        ({"cache_row_hash": 1}, False, TypeError, r"^cache_row_hash must be a bool, got int: 1$"),
        (
            {"cache": "/c", "cache_storage_options": [1]},
            False,
            TypeError,
            r"^cache_storage_options must be a dict or None, got list",
        ),
        ({"cache_version": "v2"}, False, ValueError, r"^cache_version is given but cache=None: set cache= "),
        ({"cache_storage_options": {}}, False, ValueError, r"^cache_storage_options is given but cache=None"),
    ],
)
def test_bad_options_name_the_rule_and_the_value(
    given: dict[str, Any], batched: bool, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        check(batched=batched, **given)
