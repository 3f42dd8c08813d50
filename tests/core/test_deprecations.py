"""FutureWarnings of changed options and old state versions: what they say and where they point."""

from __future__ import annotations

import os
import warnings

import pandas as pd
import pytest

from dask_reservoir import AsyncReservoir
from dask_reservoir._core.deprecations import UNTIL, max_jobs_meaning, old_state_version, user_stacklevel

pytestmark = pytest.mark.filterwarnings("default::FutureWarning")

UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ
"""mutmut's trampolines add frames of its own around the package's: where a warning points
is asserted in the normal runs only (``make test``), not by ``make mutation``."""


def test_max_jobs_at_once_warns_only_where_its_meaning_changed() -> None:
    assert max_jobs_meaning(None, 8) is None  # not given
    assert max_jobs_meaning(16, None) is None  # rows_per_job="auto": no 0.1 bound to compare
    assert max_jobs_meaning(16, 1) is None  # one row per task: rows and tasks agree
    message = max_jobs_meaning(16, 5)
    assert message is not None
    assert "max_jobs_at_once=16 counts dask tasks" in message
    assert "up to 80 rows in flight" in message and "pass max_jobs_at_once=4;" in message
    assert "pass max_jobs_at_once=1;" in (max_jobs_meaning(3, 8) or "")  # never 0
    assert message.endswith(f"This warning goes in {UNTIL}.")


def test_old_state_versions_name_the_version_and_what_to_do() -> None:
    assert old_state_version(3, 3) is None and old_state_version(4, 3) is None
    message = old_state_version(2, 3) or ""
    assert message.startswith("the state has format version 2, read until dask_reservoir 0.3")
    assert message.endswith("to write version 3")


def test_the_warning_points_at_the_users_line_through_the_facade() -> None:
    frame = pd.DataFrame({"x": range(4)})
    with pytest.warns(FutureWarning, match=r"max_jobs_at_once=6 counts dask tasks") as seen:
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            AsyncReservoir(frame, dict, 4, max_jobs_at_once=6, rows_per_job=2, batch_size=0)
    assert [w.category for w in seen] == [FutureWarning]
    assert UNDER_MUTMUT or [w.filename for w in seen] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            AsyncReservoir(frame, dict, 4, max_jobs_at_once=6, rows_per_job=1, batch_size=0)


def test_user_stacklevel_counts_the_frames_inside_the_package() -> None:
    assert user_stacklevel() == 1  # called from here: this frame is the user's
