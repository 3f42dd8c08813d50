"""Which client a reservoir uses and what it closes, on real clusters."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from typing import Any

import dask
import pytest
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir
from dask_reservoir._runtime.cluster import ClientHandle, connect_timeout, resolve_client
from tests.utils import frame, load_value, poll_for


def test_given_client_is_used_and_never_closed(client: Client) -> None:
    with AsyncReservoir(frame(4), load_value, 4, min_reservoir_samples=4, client=client) as r:
        assert len(list(r)) == 4
        assert r.stats().address == client.scheduler.address
    assert client.status == "running"


def test_default_client_is_used_when_none(client: Client) -> None:
    default = Client(client.cluster, set_as_default=True)
    try:
        with AsyncReservoir(frame(4), load_value, 4, min_reservoir_samples=4) as r:
            assert r.stats().address == default.scheduler.address
            assert len(list(r)) == 4
        assert default.status == "running"  # not owned, not closed
    finally:
        default.close()


def test_embedded_local_cluster_is_owned_and_closed() -> None:
    with AsyncReservoir(frame(6), load_value, 6, min_reservoir_samples=6, nb_workers=1) as r:
        handle = r._handle
        assert handle.owned and handle.embedded and handle.cluster is not None
        assert len(handle.cluster.worker_spec) == 1  # asked for; it may still be starting
        assert handle.cluster.scheduler_address.startswith("tcp://")
        assert sorted(int(b["label"][0]) for b in r) == list(range(6))
        poll_for(lambda: len(handle.cluster.workers) == 1, timeout=60, what="the worker process to start")
    assert handle.client.status == "closed"
    assert handle.cluster.status.name == "closed"


def test_embedded_cluster_does_not_wait_for_its_workers() -> None:
    handle = resolve_client(None, 2)
    try:
        assert handle.owned and handle.embedded and len(handle.cluster.worker_spec) == 2
        # asked for, not waited for: a worker process takes far longer to start than this check
        assert len(handle.cluster.workers) == 0
        # answered here, not by the workers (the remote check says False with no worker yet)
        assert handle.can_import("tests") and not handle.can_import("no_such_package_here")
        assert handle.client.direct_to_workers  # results come from the workers, not via the scheduler
        warmup = handle.warmup
        assert warmup is not None and handle.transient_workers == {warmup.address}
        poll_for(lambda: warmup.retired, timeout=60, what="the warm-up worker to retire")
        assert sum(handle.client.nthreads().values()) == 2  # one thread per worker process
        assert handle.client.submit(sum, [1, 2]).result(timeout=30) == 3
    finally:
        handle.close()
    assert handle.client.status == "closed" and handle.cluster.status.name == "closed"


def test_embedded_cluster_closes_while_its_workers_start() -> None:
    handle = resolve_client(None, 1)
    handle.close()  # at once: the worker process may not be up yet
    assert handle.client.status == "closed" and handle.cluster.status.name == "closed"


def test_embedded_cluster_does_not_ask_for_port_8787() -> None:
    """Its scheduler asked for 8787 (HTTP routes, dashboard off): a warning when another cluster held it."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8787))  # another cluster's dashboard (unless something holds it already)
        holder.listen()
    except OSError:
        pass  # already held: the embedded cluster cannot have it either
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            handle = resolve_client(None, 1)
            try:
                assert handle.cluster is not None
                http = handle.cluster.scheduler.http_server
                assert http.port not in (0, 8787)
            finally:
                handle.close()
    finally:
        holder.close()
    assert not [w for w in caught if "already in use" in str(w.message)], [str(w.message) for w in caught]


def test_address_string_is_owned(process_cluster: LocalCluster) -> None:
    address = process_cluster.scheduler_address
    with AsyncReservoir(frame(6), load_value, 6, min_reservoir_samples=6, client=address) as r:
        assert r.stats().address == address
        assert sorted(int(b["label"][0]) for b in r) == list(range(6))
        own = r._handle.client
    assert own.status == "closed"
    assert process_cluster.status.name == "running"  # the cluster is not ours to close


def test_nothing_listening_fails_fast_naming_the_address() -> None:
    address = "tcp://127.0.0.1:1"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert connect_timeout() == 1.0
        with pytest.raises(
            OSError, match=r"could not connect to the dask scheduler at 'tcp://127\.0\.0\.1:1'"
        ):
            AsyncReservoir(frame(2), load_value, 2, client=address)


def test_connect_timeout_is_capped() -> None:
    with dask.config.set({"distributed.comm.timeouts.connect": "60s"}):
        assert connect_timeout() == 10.0


def test_resolve_client_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="got list"):
        resolve_client([1], None)


def test_no_worker_yet_means_the_function_travels_by_value() -> None:
    with (
        LocalCluster(
            n_workers=0, processes=False, dashboard_address=None, silence_logs=logging.CRITICAL
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        handle = ClientHandle(c, owned=False)
        assert not handle.can_import("tests")  # a worker that joins later may not import it
        cluster.scale(1)
        c.wait_for_workers(1, timeout=30)
        assert handle.can_import("tests")


def started_in(row: dict[str, Any]) -> dict[str, Any]:
    """Which process loaded the row."""
    return {"pid": os.getpid(), "label": int(row["value"])}


def test_the_embedded_cluster_loads_at_once_on_a_warm_up_worker_retired_when_the_processes_join() -> None:
    with AsyncReservoir(
        frame(400), started_in, 400, min_reservoir_samples=8, nb_workers=2, rows_per_job=1
    ) as r:
        handle = r._handle
        warmup = handle.warmup
        assert warmup is not None and not warmup.retired
        first = next(iter(r))  # with the thread runner, loaded before any worker process is up
        assert (first["label"] == first["sample_uid"]).all()
        poll_for(lambda: warmup.retired, timeout=60, what="the warm-up worker to retire")
        workers = handle.client.nthreads()
        assert len(workers) == 2 and warmup.address not in workers  # the two processes, one thread each
        pids = set(first["pid"].tolist())

        def loaded_everything() -> bool:
            for batch in r:
                assert (batch["label"] == batch["sample_uid"]).all()
                pids.update(batch["pid"].tolist())
            return r.reservoir_size() == 400

        poll_for(loaded_everything, timeout=60, what="every row loaded")
        stats = r.stats()
        assert stats.workers == 2 and stats.workers_lost == 0  # the warm-up worker left as planned
        assert len(pids - {os.getpid()}) >= 1  # rows from the worker processes
        if stats.loader == "thread":  # and from here; a loader process starts after the workers may be up
            assert os.getpid() in pids
