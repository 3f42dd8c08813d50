"""Which dask client a reservoir uses, and whether it owns (and must close) it.

- ``None``: distributed's current default client if there is one, else an
  embedded ``LocalCluster`` that the reservoir owns, whose workers start in the
  background (jobs are submitted at once and run as soon as the first worker is up);
- a ``str``: ``Client(address)`` to a running scheduler, owned;
- a ``Client``: used as is, never closed by dask_reservoir.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dask.config
from dask.system import CPU_COUNT
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

from dask_reservoir._runtime.code_upload import CodeUpload
from dask_reservoir._runtime.warmup import Warmup

__all__ = ["ClientHandle", "importable_on", "resolve_client"]

logger = logging.getLogger("dask_reservoir")

MAX_CONNECT_TIMEOUT = 10.0
"""Longest wait (seconds) for a scheduler address to answer; dask's own default is 30 s."""


WARMUP = True
"""Whether the embedded cluster starts with a warm-up worker of threads in this process
(:mod:`~dask_reservoir._runtime.warmup`) while its worker processes start."""

EMBEDDED_HTTP_ADDRESS = "127.0.0.1:0"
"""Where the embedded cluster's scheduler serves HTTP (no dashboard): any free loopback port."""


def connect_timeout() -> float:
    """Seconds to wait for a scheduler: ``distributed.comm.timeouts.connect``, at most 10 s."""
    configured = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    return min(float(configured or MAX_CONNECT_TIMEOUT), MAX_CONNECT_TIMEOUT)


@dataclass
class ClientHandle:
    """A client plus what to close with it.

    ``cluster`` is set for the embedded ``LocalCluster``: its worker processes are
    spawned from this one, with its ``sys.path``, so what imports here imports there.
    """

    client: Client
    owned: bool
    cluster: LocalCluster | None = None
    local_workers: bool = False
    """The workers are children of this process's parent (the loader process's view of
    the embedded cluster): they import what this process imports."""
    warmup: Warmup | None = None
    """The embedded cluster's warm-up worker (threads in this process while its processes start)."""
    code: CodeUpload | None = None
    """dask_reservoir's code uploaded to the cluster for this reservoir (``upload_code=True``)."""
    transient_workers: frozenset[str] = frozenset()
    """Workers meant to leave (the warm-up worker): their departure is no loss."""

    @property
    def embedded(self) -> bool:
        """Whether the cluster is the reservoir's own ``LocalCluster`` of this process's children."""
        return self.cluster is not None or self.local_workers

    @property
    def address(self) -> str:
        """The scheduler address (``""`` when unknown)."""
        try:
            return str(self.client.scheduler.address)  # type: ignore[union-attr]
        except Exception:
            return ""

    def can_import(self, package: str) -> bool:
        """Whether the scheduler and every current worker can import ``package``.

        False with no worker yet: workers that join later may not import it.  For the
        embedded cluster, answered here without asking the workers (they may still be
        starting): its workers import what this process imports.
        """
        if self.embedded:
            return _importable(package)
        try:
            on_scheduler = self.client.run_on_scheduler(_importable, package)
        except Exception as exc:
            logger.debug("could not ask the scheduler whether it imports %r: %r", package, exc)
            return False
        return bool(on_scheduler) and importable_on(self.client, package) is True

    def worker_threads(self) -> int:
        """Total worker threads of the cluster now (at least 1)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return 1

    def close(self) -> None:
        """Release the uploaded code; close the client and cluster if owned; never raises."""
        if self.code is not None:
            self.code.release()
        if not self.owned:
            return
        if self.warmup is not None:
            self.warmup.close()
        for thing in (self.client, self.cluster):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # pragma: no cover - best effort
                logger.debug("closing %r failed: %r", thing, exc)


def importable_on(client: Client, package: str, workers: list[str] | None = None) -> bool | None:
    """Whether every worker (or each of ``workers``) can import ``package``.

    None when there is no worker to ask, or asking failed.
    """
    try:
        answers = client.run(_importable, package, workers=workers)
    except Exception as exc:
        logger.debug("could not ask the workers whether they import %r: %r", package, exc)
        return None
    if not answers:
        return None
    return all(answers.values())


def _importable(package: str) -> bool:
    """Run on the scheduler and workers by :meth:`ClientHandle.can_import`."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _embedded_cluster(nb_workers: int | None) -> ClientHandle:
    """A ``LocalCluster`` of ``nb_workers`` (default: CPU count) one-thread worker processes, owned.

    ``LocalCluster(n_workers=n)``, and ``Client(cluster)`` too, return only once every
    worker has started (each spawns a Python and imports distributed: about 0.5 s
    here); so the scheduler starts alone, the client connects to it, and only then
    are the workers asked for, in the background (``scale``): the reservoir submits
    its first jobs at once and they run as soon as the first worker is up.
    The client fetches results from the workers directly (one hop instead of two
    through the scheduler, which runs in this process).

    No dashboard: ``dashboard_address=None`` turns the dashboard off, but the
    scheduler still serves its HTTP routes (health, metrics) on a port, and with no
    address it asks for 8787, warning "Port 8787 is already in use" whenever another
    cluster holds it.  So the scheduler is given port 0 on the loopback (any free port).
    """
    n = max(1, CPU_COUNT) if nb_workers is None else nb_workers
    cluster = LocalCluster(
        n_workers=0,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,  # dashboard=False for the scheduler
        scheduler_kwargs={"dashboard_address": EMBEDDED_HTTP_ADDRESS},
        silence_logs=logging.ERROR,
    )
    warmup = None
    try:
        client = Client(cluster, set_as_default=False, direct_to_workers=True)  # no worker to wait for
        cluster.scale(n)
        if WARMUP:
            warmup = Warmup(cluster, threads=n, processes=n)  # loads while the processes start
    except BaseException:
        cluster.close()
        raise
    transient = frozenset() if warmup is None else frozenset({warmup.address})
    return ClientHandle(client, owned=True, cluster=cluster, warmup=warmup, transient_workers=transient)


def _default_client() -> Client | None:
    try:
        from distributed import default_client

        return default_client()
    except ValueError:
        return None


def resolve_client(client: Any, nb_workers: int | None) -> ClientHandle:
    """Turn the ``client`` argument of ``AsyncReservoir`` into a :class:`ClientHandle`.

    Raises
    ------
    TypeError
        When ``client`` is not None, a str or a ``distributed.Client``.
    ValueError
        When ``nb_workers`` is given but no cluster is started here.
    OSError
        When nothing answers at the given address within :func:`connect_timeout`.
    """
    if client is not None and not isinstance(client, (str, Client)):
        raise TypeError(
            "client must be None, a scheduler address str or a distributed.Client, "
            f"got {type(client).__name__}: {client!r}"
        )
    if client is None:
        client = _default_client()
        if client is None:
            return _embedded_cluster(nb_workers)
    if nb_workers is not None:
        raise ValueError(
            "nb_workers applies only when dask_reservoir starts its own LocalCluster "
            f"(client=None and no default client), got nb_workers={nb_workers} with client={client!r}"
        )
    if isinstance(client, str):
        timeout = connect_timeout()
        try:
            return ClientHandle(Client(client, set_as_default=False, timeout=timeout), owned=True)
        except (OSError, TimeoutError) as exc:
            raise OSError(
                f"could not connect to the dask scheduler at {client!r} within {timeout:g} s: {exc}"
            ) from exc
    return ClientHandle(client, owned=False)
