"""Before a reservoir with ``cache=`` starts: every worker must see the cache's directory.

The client writes a probe file holding a random token and asks each worker, with
``Client.run``, whether it reads the same token there.  A local path on workers of
other machines, or a ``memory://`` URL on worker processes, is refused naming the
workers that do not see it: each would keep results the others never find.
"""

from __future__ import annotations

from typing import Any

from distributed import Client

from dask_reservoir._worker.cache.files import CacheFiles

__all__ = ["check_cache_visible"]

CHECK_TIMEOUT = 30.0
"""Seconds the workers get to answer."""


def sees(files: CacheFiles, token: str) -> bool:
    """On a worker: whether it reads the probe ``token`` (False on any error)."""
    try:
        return files.sees_probe(token)
    except Exception:
        return False


def check_cache_visible(client: Client, url: str, storage_options: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` naming the workers that do not see ``url`` as this process does.

    A cluster without workers yet is not checked (its workers join later).
    """
    files = CacheFiles(url, storage_options=storage_options)
    token = files.write_probe()
    try:
        answers = client.run(sees, files, token, on_error="return", wait=True)
    finally:
        files.remove_probe(token)
    blind = sorted(worker for worker, seen in answers.items() if seen is not True)
    if blind:
        where = "this process's memory" if files.fs.protocol in ("memory", ("memory",)) else "this machine"
        raise ValueError(
            f"cache={url!r} is not the same directory on {len(blind)} of the {len(answers)} workers "
            f"({blind[:5]}): they do not see a file written there from {where}.  Each worker must "
            "read what the others wrote: use a directory every worker mounts at the same path, or an "
            "object store URL (s3://, gs://, ...)"
        )
