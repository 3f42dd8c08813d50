"""The runtime's named interfaces: both runners and both ledgers offer every member; make_runner; raise_fatal.

mypy checks the signatures (``make_runner`` returns either runner as a ``RunnerLike``); these tests
check that the members exist at run time, and, on a real cluster, that ``make_runner`` picks by mode.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from dask_reservoir import SequentialSampler
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._core.options import validate_options
from dask_reservoir._runtime.cluster import ClientHandle
from dask_reservoir._runtime.loader.mirror import LedgerMirror
from dask_reservoir._runtime.loader.parent import LoaderProcess, choose_loader, make_runner
from dask_reservoir._runtime.protocols import LedgerLike, RunnerLike, raise_fatal
from dask_reservoir._runtime.runner import JobRunner
from dask_reservoir._source.pandas_source import PandasSource
from dask_reservoir.errors import ClusterLostError
from tests.utils import scheduler_task_count


def members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | {n for n in getattr(protocol, "__annotations__", {}) if not n.startswith("_")}


def test_the_protocols_name_what_the_reservoir_calls() -> None:
    assert members(RunnerLike) == {
        "ledger",
        "perf_sending",
        "perf_receiving",
        "start",
        "take",
        "wait",
        "poke",
        "check",
        "close",
        "wait_released",
    }
    assert {
        "take",
        "wait",
        "counters",
        "pop_error",
        "rejected",
        "checkpoint",
        "release_quarantine",
    } <= members(LedgerLike)


@pytest.mark.parametrize("implementation", [Ledger, LedgerMirror])
def test_both_ledgers_offer_every_member(implementation: type) -> None:
    ledger = (
        Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
        if implementation is Ledger
        else LedgerMirror(lambda message: None, lambda kind, payload: None)
    )
    for name in members(LedgerLike):
        assert hasattr(ledger, name), f"{implementation.__name__} has no {name}"


@pytest.mark.parametrize("implementation", [JobRunner, LoaderProcess])
def test_both_runners_offer_every_method(implementation: type) -> None:
    for name in members(RunnerLike) - {"ledger", "perf_sending", "perf_receiving"}:  # set in __init__
        method = getattr(implementation, name)
        protocol_params = list(inspect.signature(getattr(RunnerLike, name)).parameters)
        assert list(inspect.signature(method).parameters) == protocol_params, name


@pytest.fixture(scope="module")
def tcp_client() -> Iterator[Client]:
    """A client of a threaded LocalCluster (1 worker x 2 threads) reached over TCP, as a loader process would."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def source() -> PandasSource:
    return PandasSource(
        uids=["a", "b"], uid_column="uid", frame=pd.DataFrame({"uid": ["a", "b"], "v": [1, 2]})
    )


def load(row: dict[str, Any]) -> dict[str, Any]:
    return row


@pytest.mark.parametrize(("loader", "kind"), [("thread", JobRunner), ("process", LoaderProcess)])
def test_make_runner_builds_the_runner_of_the_mode(tcp_client: Client, loader: str, kind: type) -> None:
    handle = ClientHandle(tcp_client, owned=False, local_workers=True)
    assert choose_loader(loader, handle, source())[0] == loader  # a mode this cluster allows
    options = validate_options(max_reservoir_samples=4, min_reservoir_samples=2)
    runner = make_runner(handle, source(), load, options, SequentialSampler(), loader=loader)
    try:
        assert type(runner) is kind
        assert runner.ledger.counters().uids_tried == 0  # not started
    finally:
        runner.close()
    assert scheduler_task_count(tcp_client) == 0  # nothing was submitted
    assert tcp_client.status == "running"  # a client the reservoir does not own stays open


def test_raise_fatal_keeps_a_lost_cluster_and_a_bad_argument() -> None:
    raise_fatal(None)
    cause = OSError("gone")
    lost = ClusterLostError("lost the scheduler")
    lost.__cause__ = cause
    with pytest.raises(ClusterLostError, match="lost the scheduler") as info:
        raise_fatal(lost)
    assert info.value is not lost and info.value.__cause__ is cause
    for kind in (ValueError, TypeError):
        bad = kind("bad sampler")
        with pytest.raises(kind, match="bad sampler") as raised:
            raise_fatal(bad)
        assert raised.value.__cause__ is bad


def test_raise_fatal_wraps_anything_else() -> None:
    class Subclass(ValueError):
        pass

    for fatal in (KeyError("k"), Subclass("s"), KeyboardInterrupt()):
        with pytest.raises(RuntimeError, match="the dask_reservoir job runner stopped: ") as info:
            raise_fatal(fatal)
        assert info.value.__cause__ is fatal
