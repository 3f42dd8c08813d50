"""Epoch bookkeeping users expect: len() of an epoch, set_epoch(), coverage in stats()."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, RandomSampler
from tests.utils import frame, iterate_until, load_value, poll_for


def order_of(r: AsyncReservoir) -> list[int]:
    return [int(u) for b in r for u in b["sample_uid"]]


def test_set_epoch_numbers_the_samplers_epochs(client: Client) -> None:
    with AsyncReservoir(
        frame(12),
        load_value,
        12,
        min_reservoir_samples=12,
        client=client,
        batch_size=4,
        reservoir_sampler=RandomSampler(seed=0),
    ) as r:
        first, second = order_of(r), order_of(r)
        assert first != second and sorted(first) == list(range(12))
        r.set_epoch(0)
        assert order_of(r) == first  # epoch 0 again: the same order
        assert order_of(r) == second  # and the numbering goes on from there
        r.set_epoch(7)
        seventh = order_of(r)
        r.set_epoch(7)
        assert order_of(r) == seventh
        assert r.stats().epochs == 6  # epochs started, whatever their numbers
        with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
            r.set_epoch(-1)
        with pytest.raises(TypeError, match=r"epoch must be an int, got float: 1\.0"):
            r.set_epoch(1.0)  # type: ignore[arg-type]


def test_len_of_an_epoch_is_its_batch_count(client: Client) -> None:
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=4
    ) as r:
        it = iter(r)
        assert len(it) == 3 == len(list(it))
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=4, drop_last=True
    ) as r:
        it = iter(r)
        assert len(it) == 2 == len(list(it))


def test_coverage_counts_loaded_served_passes_and_the_oldest_unserved(client: Client) -> None:
    with AsyncReservoir(
        frame(20),
        load_value,
        5,
        min_reservoir_samples=5,
        client=client,
        batch_size=1,
        maximum_number_of_samples_per_epoch=1,  # one UID served per epoch: most are never served
        rows_per_job=1,
    ) as r:
        served: set[int] = set()
        iterate_until(
            r, lambda: r.stats().source_passes >= 1, check=lambda b: served.update(b["sample_uid"].tolist())
        )
        poll_for(lambda: r.stats().uids_loaded == 20, what="every UID loaded once")
        s = r.stats()
        assert s.uids_served == len(served) and 0 < s.uids_served < 20
        entries = {int(u) for b in r for u in b["sample_uid"]}  # one more epoch, counted too
        s = r.stats()
        assert s.uids_served == len(served | entries)
        # the oldest entry no batch has held yet
        assert s.oldest_unserved_uid is not None and s.oldest_unserved_uid not in served | entries
        assert s.source_passes >= 1 and s.uids_loaded == 20


def test_every_uid_served_is_counted_once_over_many_epochs(client: Client) -> None:
    with AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=client, batch_size=3) as r:
        for _ in range(5):
            list(r)
        s = r.stats()
        assert s.uids_served == 8 and s.oldest_unserved_uid is None
        assert np.isfinite(s.times_served_mean) and s.times_served_mean >= 1
