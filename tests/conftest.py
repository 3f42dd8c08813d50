"""Shared fixtures: module-scoped real dask clusters and leak checks."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from distributed import Client, LocalCluster

from tests.utils import local_process_cluster, poll_for, scheduler_task_count, threaded_cluster


def _runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dask_reservoir-")]


@pytest.fixture(autouse=True)
def _no_runner_thread_leak() -> Iterator[None]:
    """Every test must leave no dask_reservoir thread running."""
    yield
    poll_for(lambda: not _runner_threads(), timeout=15, what="dask_reservoir threads to stop")


@pytest.fixture(autouse=True)
def _seed_numpy() -> None:
    np.random.seed(0)


def _released(client: Client) -> bool:
    """Whether the client holds no future; futures kept only by garbage (a cycle through a
    traceback's frames, say) are collected first: they are freed, not leaked."""
    if not client.futures:
        return True
    gc.collect()
    return not client.futures


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Client]:
    """A threaded LocalCluster (2 workers x 1 thread) shared by a test module."""
    with threaded_cluster(2) as client:
        yield client


@pytest.fixture
def client(cluster_client: Client) -> Iterator[Client]:
    """The module's client; after the test, none of its futures or tasks may remain."""
    yield cluster_client
    poll_for(lambda: _released(cluster_client), timeout=15, period=0.1, what="client futures to be released")
    poll_for(
        lambda: scheduler_task_count(cluster_client) == 0, timeout=15, what="scheduler tasks to be released"
    )


@pytest.fixture(scope="module")
def process_cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of 2 worker processes (with nannies) on 127.0.0.1."""
    with local_process_cluster(2) as cluster:
        yield cluster


@pytest.fixture
def process_client(process_cluster: LocalCluster) -> Iterator[Client]:
    """A fresh client of the process cluster; checked for leftover futures."""
    with Client(process_cluster, set_as_default=False) as client:
        yield client
        poll_for(lambda: _released(client), timeout=15, period=0.1, what="client futures to be released")
        poll_for(lambda: scheduler_task_count(client) == 0, timeout=15, what="scheduler tasks to be released")
