"""Parameter validation: each bad value gives a clear error naming the parameter (pure)."""

from __future__ import annotations

import pytest

from dask_reservoir._core.options import validate_options

GOOD = {"max_reservoir_samples": 8}


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ({"max_reservoir_samples": 0}, ValueError, "max_reservoir_samples must be >= 1, got 0"),
        ({"max_reservoir_samples": 2.0}, TypeError, "max_reservoir_samples must be an int, got float"),
        ({"max_reservoir_samples": True}, TypeError, "max_reservoir_samples must be an int, got bool"),
        ({"min_reservoir_samples": 0}, ValueError, "min_reservoir_samples must be >= 1, got 0"),
        ({"min_reservoir_samples": 9}, ValueError, "min_reservoir_samples=9 > max_reservoir_samples=8"),
        ({"uid_column": ""}, TypeError, "uid_column must be a non-empty str"),
        ({"uid_column": 1}, TypeError, "uid_column must be a non-empty str, got int"),
        ({"max_jobs_at_once": 0}, ValueError, "max_jobs_at_once must be >= 1 or None, got 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": "4"}, TypeError, "batch_size must be an int, got str"),
        ({"drop_last": 1}, TypeError, "drop_last must be a bool, got int"),
        ({"collate_fn": 3}, TypeError, "collate_fn must be callable or None, got int"),
        (
            {"maximum_number_of_samples_per_epoch": 0},
            ValueError,
            "maximum_number_of_samples_per_epoch must be >= 1",
        ),
        ({"max_reservoir_replacement_size": -2}, ValueError, "max_reservoir_replacement_size must be >= 1"),
        ({"rows_per_job": 0}, ValueError, "rows_per_job must be >= 1, got 0"),
        ({"rows_per_job": "many"}, ValueError, "rows_per_job must be an int >= 1 or 'auto', got 'many'"),
        ({"retries": -1}, ValueError, "retries must be >= 0, got -1"),
        ({"on_error": "ignore"}, ValueError, r"on_error must be one of \['skip', 'raise'\], got 'ignore'"),
        ({"on_cluster_loss": "wait"}, ValueError, r"on_cluster_loss must be one of \['raise', 'serve'\]"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds or None, got 0"),
        ({"timeout": "soon"}, ValueError, "timeout must be seconds .* got 'soon'"),
        ({"timeout": [1]}, TypeError, "timeout must be seconds .* got list"),
        ({"max_failures_per_uid": 0}, ValueError, "max_failures_per_uid must be >= 1 or None, got 0"),
        ({"nb_workers": 0}, ValueError, "nb_workers must be >= 1 or None, got 0"),
    ],
)
def test_bad_options(bad: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        validate_options(**{**GOOD, **bad})


def test_defaults_and_parsing() -> None:
    o = validate_options(max_reservoir_samples=8, timeout="250ms")
    assert o.timeout == 0.25 and o.min_reservoir_samples == 1 and o.on_error == "skip"
    assert o.max_failures_per_uid == 3 and o.max_jobs_at_once is None
    assert validate_options(max_reservoir_samples=8, timeout=2).timeout == 2.0
    assert (
        validate_options(max_reservoir_samples=8, rows_per_job="auto", max_jobs_at_once=1).rows_per_job
        is None
    )


def test_given_values_come_back() -> None:
    """Every valid, non-default value is kept as given (a field left at its default is caught)."""

    def collate(rows: list[dict[str, object]]) -> int:
        return len(rows)

    given = {
        "max_reservoir_samples": 9,
        "min_reservoir_samples": 9,  # equal to the maximum: allowed
        "uid_column": "case",
        "max_jobs_at_once": 4,
        "rows_per_job": 4,  # equal to the bound: allowed
        "batch_size": 5,
        "drop_last": True,
        "collate_fn": collate,
        "maximum_number_of_samples_per_epoch": 6,
        "max_reservoir_replacement_size": 7,
        "retries": 2,
        "on_error": "raise",
        "timeout": "3",  # a bare number is seconds
        "job_timeout": "1.5s",
        "max_failures_per_uid": None,
        "on_cluster_loss": "serve",
        "nb_workers": 3,
    }
    o = validate_options(**given)
    assert {name: getattr(o, name) for name in given} == {**given, "timeout": 3.0, "job_timeout": 1.5}


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ({"max_jobs_at_once": "4"}, TypeError, "max_jobs_at_once must be an int or None, got str"),
        ({"rows_per_job": 2.0}, TypeError, "rows_per_job must be an int, got float"),
        ({"bogus": 1}, TypeError, r"unknown options \['bogus'\]"),
    ],
)
def test_more_bad_options(bad: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        validate_options(**{**GOOD, **bad})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"progress": 1, "retries": -1}, r"retries must be >= 0"),
        ({"prefetch_batches": -1, "loader": "fork"}, r"loader must be one of"),
        ({"max_stale_epochs": None, "batch_format": "arrow"}, r"batch_format must be one of"),
        ({"function": 5, "progress": "yes"}, r"function_to_run must be callable, got int: 5"),
        ({"function": 5, "retries": -1}, r"retries must be >= 0"),
        ({"progress": "yes", "prefetch_batches": -1}, r"progress must be a bool"),
    ],
)
def test_the_first_of_several_bad_arguments_is_the_one_asyncreservoir_always_reported(
    bad: dict[str, object], match: str
) -> None:
    """The options, then function_to_run, then progress/prefetch_batches/max_stale_epochs."""
    with pytest.raises((TypeError, ValueError), match=match):
        validate_options(max_reservoir_samples=4, **bad)  # type: ignore[arg-type]


def test_a_callable_function_passes() -> None:
    assert validate_options(function=len, max_reservoir_samples=4).max_stale_epochs == 2


def test_the_serving_and_sharding_options_come_back() -> None:
    """The options checked apart (loader, rank, deterministic, formats, serving) are kept as given."""
    given = {
        "loader": "process",
        "rank": 1,
        "world_size": 3,
        "deterministic": True,
        "max_reservoir_replacement_size": 2,
        "batch_format": "pandas",
        "batched": True,
        "progress": True,
        "prefetch_batches": 0,
        "max_stale_epochs": 0,  # the boundary: allowed
    }
    o = validate_options(max_reservoir_samples=8, **given)
    assert {name: getattr(o, name) for name in given} == given
    other = {**given, "loader": "thread", "rank": 0, "world_size": 1, "deterministic": False}
    other.update(batch_format="numpy", batched=False, progress=False, prefetch_batches=5, max_stale_epochs=7)
    o = validate_options(max_reservoir_samples=8, **other)
    assert {name: getattr(o, name) for name in other} == other
    assert validate_options(max_reservoir_samples=8, loader=None).loader is None


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (
            {"loader": "fork"},
            ValueError,
            r"^loader must be one of \['auto', 'process', 'thread'\], got 'fork'$",
        ),
        ({"deterministic": 1}, TypeError, r"^deterministic must be a bool, got int: 1$"),
        ({"deterministic": "yes"}, TypeError, r"^deterministic must be a bool, got str: 'yes'$"),
        (
            {"deterministic": True},
            ValueError,
            r"^deterministic=True needs max_reservoir_replacement_size \(the entries each iter\(\) ingests, "
            r"exactly\), got max_reservoir_replacement_size=None$",
        ),
        ({"batched": 0}, TypeError, r"^batched must be a bool, got int: 0$"),
        ({"batched": "no"}, TypeError, r"^batched must be a bool, got str: 'no'$"),
        ({"job_timeout": -1}, ValueError, r"^job_timeout must be > 0 seconds or None, got -1$"),
        ({"job_timeout": "later"}, ValueError, r"^job_timeout must be seconds .*got 'later'$"),
        ({"progress": 1}, TypeError, r"^progress must be a bool, got int: 1$"),
        ({"prefetch_batches": 1.5}, TypeError, r"^prefetch_batches must be an int, got float: 1.5$"),
        ({"prefetch_batches": True}, TypeError, r"^prefetch_batches must be an int, got bool: True$"),
        (
            {"prefetch_batches": -1},
            ValueError,
            r"^prefetch_batches must be >= 0 \(0: build each batch in next\(\)\), got -1$",
        ),
        ({"max_stale_epochs": "2"}, TypeError, r"^max_stale_epochs must be an int, got str: '2'$"),
        ({"max_stale_epochs": False}, TypeError, r"^max_stale_epochs must be an int, got bool: False$"),
        (
            {"max_stale_epochs": -1},
            ValueError,
            r"^max_stale_epochs must be >= 0 \(newer epochs an iterator may fall behind\), got -1$",
        ),
        (
            {"rank": 3, "world_size": 3},
            ValueError,
            r"rank must be in \[0, world_size\) = \[0, 3\), got rank=3",
        ),
    ],
)
def test_bad_option_messages_in_full(bad: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        validate_options(**{**GOOD, **bad})


def test_a_collate_fn_leaves_the_batch_format_to_it() -> None:
    def collate(rows: list[dict[str, object]]) -> int:
        return len(rows)

    assert validate_options(**GOOD, collate_fn=collate).batch_format == "numpy"
    assert validate_options(**GOOD, batch_format="pandas").batch_format == "pandas"
    with pytest.raises(ValueError, match=r"batch_format='pandas' converts the default collate's batches"):
        validate_options(**GOOD, collate_fn=collate, batch_format="pandas")
