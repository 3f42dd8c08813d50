"""``max_reservoir_bytes``: a memory bound in bytes for samples of mixed sizes (a process cluster)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from tests.utils import poll_for

pytestmark = pytest.mark.timeout(120)

BOUND = 400_000  # bytes
SMALLEST = 4 * 2_000  # float32 volumes of 2,000 to 30,000 values


def volume(row: dict[str, Any]) -> dict[str, Any]:
    return {"vol": np.full(int(row["size"]), row["sample_uid"], np.float32)}


def frame() -> pd.DataFrame:
    sizes = np.random.default_rng(1).integers(2_000, 30_000, 120)
    sizes[1] = 200_000  # 800 kB: heavier than the whole bound
    return pd.DataFrame({"sample_uid": np.arange(1000, 1120), "size": sizes})


@pytest.mark.filterwarnings("ignore:column 'vol' changed:UserWarning")  # mixed shapes: kept as rows
def test_mixed_sizes_stay_within_the_bound_and_every_row_is_its_own(process_client: Client) -> None:
    with AsyncReservoir(
        frame(), volume, 120, client=process_client, max_reservoir_bytes="400kB", min_reservoir_samples=4,
        max_failures_per_uid=1, timeout=60,
    ) as r:  # fmt: skip
        served, epochs, deadline = 0, 0, time.monotonic() + 90
        # at least 12 epochs, and until an entry was evicted (how many loads that takes follows the machine)
        while epochs < 12 or r.stats().entries_evicted == 0:
            assert time.monotonic() < deadline, f"no entry evicted in 90 s: {r.stats()}"
            epochs += 1
            for batch in r:
                assert (batch["vol"] == batch["sample_uid"][:, None]).all()
                served += 1
            s = r.stats()
            assert s.max_reservoir_bytes == BOUND
            assert 0 < s.reservoir_bytes <= BOUND
            assert s.reservoir_size < 120  # the count bound is not what limits it
            # results out (in flight or waiting) are bounded by what fits in the bytes too
            assert s.rows_in_flight + s.entries_waiting <= BOUND // SMALLEST
        # the heavy entry's refusal is its UID's failure (with a loader process, recorded by the
        # loader and reported with its next counters)
        poll_for(lambda: 1001 in {f.uid for f in r.stats().failures}, timeout=30, what="UID 1001's failure")
        stats = r.stats()
    assert served > 12 and stats.entries_evicted > 0
    failed = {f.uid: f for f in stats.failures}
    assert "takes 800008 bytes, more than max_reservoir_bytes=400000" in failed[1001].message


def test_the_byte_bound_is_checked(client: Client) -> None:
    source = frame()
    with pytest.raises(
        TypeError,
        match=r"max_reservoir_bytes must be bytes \(an int or a str like '4GiB'\) or None, got float",
    ):
        AsyncReservoir(source, volume, 10, client=client, max_reservoir_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"max_reservoir_bytes must be bytes \(an int or a str like '4GiB'\), got 'lots'"
    ):
        AsyncReservoir(source, volume, 10, client=client, max_reservoir_bytes="lots")
    with pytest.raises(ValueError, match="max_reservoir_bytes must be >= 1 byte or None, got 0"):
        AsyncReservoir(source, volume, 10, client=client, max_reservoir_bytes=0)
    with AsyncReservoir(source, volume, 10, client=client, max_reservoir_bytes="2 MiB") as r:
        assert r.stats().max_reservoir_bytes == 2 * 2**20
