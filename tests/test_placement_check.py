"""A restriction no worker meets warns at construction, instead of looking like a slow loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir


def frame() -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(8)})


def double(row: dict[str, int]) -> dict[str, int]:
    return {"v": int(row["sample_uid"]) * 2}


def test_restrictions_no_worker_meets_warn_at_the_callers_line(client: Client) -> None:
    n = len(client.scheduler_info()["workers"])
    with pytest.warns(
        UserWarning,
        match=rf"none of the {n} workers has resources=\{{'GPU': 1.0\}} \(they have no resources\): dask keeps",
    ) as seen:
        AsyncReservoir(frame(), double, 8, client=client, resources={"GPU": 1}).close()
    assert [w.filename for w in seen] == [__file__]
    with pytest.warns(UserWarning, match=r"workers=\['tcp://10.255.0.1:1'\]"):
        AsyncReservoir(frame(), double, 8, client=client, workers="tcp://10.255.0.1:1").close()


def test_restrictions_a_worker_meets_do_not_warn(client: Client) -> None:
    some = next(iter(client.scheduler_info()["workers"]))
    # a warning would fail the test (filterwarnings = error)
    with AsyncReservoir(frame(), double, 8, client=client, workers=[some], passes=1) as r:
        r.wait_loaded(timeout=60)
        table = r.to_pandas()
    assert (table["v"] == table["sample_uid"] * 2).all() and len(table) == 8
    # a preference is no restriction
    AsyncReservoir(
        frame(), double, 8, client=client, workers="tcp://10.255.0.1:1", allow_other_workers=True
    ).close()


def test_a_dask_source_no_worker_can_hold_is_refused_instead_of_waiting(client: Client) -> None:
    import dask.dataframe as dd

    source = dd.from_pandas(frame(), npartitions=2)
    with pytest.raises(
        ValueError, match=r"resources=\{'GPU': 1.0\}.*a dask source is persisted on those workers"
    ):
        AsyncReservoir(source, double, 8, client=client, resources={"GPU": 1})
    with pytest.raises(ValueError, match=r"they have addresses \[.*\] and names \[.*\]\): a dask source"):
        AsyncReservoir(source, double, 8, client=client, workers="tcp://10.255.0.1:1")
    with AsyncReservoir(
        source, double, 8, client=client, passes=1, workers="tcp://10.255.0.1:1", allow_other_workers=True
    ) as r:
        r.wait_loaded(timeout=60)
        assert sorted(r.to_pandas()["v"]) == [2 * i for i in range(8)]
