"""Which dask client a reservoir uses, and whether it owns (and must close) it.

- ``None``: distributed's current default client if there is one, else an
  embedded ``LocalCluster`` that the reservoir owns;
- a ``str``: ``Client(address)`` to a running scheduler, owned;
- a ``Client``: used as is, never closed by dask_reservoir.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

__all__ = ["ClientHandle", "resolve_client"]

logger = logging.getLogger("dask_reservoir")

CONNECT_TIMEOUT = "10s"


@dataclass
class ClientHandle:
    """A client plus what to close with it."""

    client: Client
    owned: bool
    cluster: LocalCluster | None = None

    @property
    def address(self) -> str:
        """The scheduler address (``""`` when unknown)."""
        try:
            return str(self.client.scheduler.address)  # type: ignore[union-attr]
        except Exception:
            return ""

    def worker_threads(self) -> int:
        """Total worker threads of the cluster now (at least 1)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return 1

    def close(self) -> None:
        """Close the client and cluster if owned; never raises."""
        if not self.owned:
            return
        for thing in (self.client, self.cluster):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # pragma: no cover - best effort
                logger.debug("closing %r failed: %r", thing, exc)


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
        When nothing answers at the given address within 10 s.
    """
    if client is not None and not isinstance(client, (str, Client)):
        raise TypeError(
            "client must be None, a scheduler address str or a distributed.Client, "
            f"got {type(client).__name__}: {client!r}"
        )
    if client is None:
        client = _default_client()
        if client is None:
            n = nb_workers
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            return ClientHandle(Client(cluster, set_as_default=False), owned=True, cluster=cluster)
    if nb_workers is not None:
        raise ValueError(
            "nb_workers applies only when dask_reservoir starts its own LocalCluster "
            f"(client=None and no default client), got nb_workers={nb_workers} with client={client!r}"
        )
    if isinstance(client, str):
        try:
            return ClientHandle(Client(client, set_as_default=False, timeout=CONNECT_TIMEOUT), owned=True)
        except (OSError, TimeoutError) as exc:
            raise OSError(
                f"could not connect to the dask scheduler at {client!r} within "
                f"{parse_timedelta(CONNECT_TIMEOUT):g} s: {exc}"
            ) from exc
    return ClientHandle(client, owned=False)
