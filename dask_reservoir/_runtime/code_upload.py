"""Upload dask_reservoir's own code to a cluster that does not have it (``upload_code=True``).

:func:`package_archive` zips the package's sources (the same bytes for the same code, so that
every client of one version registers one plugin); :func:`upload_code` registers the plugins of
:mod:`~dask_reservoir._runtime.code_plugins` on a client's cluster, once per client and code,
and returns a :class:`CodeUpload` whose :meth:`~CodeUpload.release` unregisters them when the
last reservoir using them on that client closes.  Workers that already imported the code keep
it (a Python process cannot forget a module); workers that join later no longer receive it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import zipfile
from functools import lru_cache
from pathlib import Path

import cloudpickle
from distributed import Client

from dask_reservoir._runtime import code_plugins
from dask_reservoir._runtime.code_plugins import CodeOnScheduler, CodeOnWorkers, installed_version
from dask_reservoir._worker.shipping import PICKLE_LOCK

__all__ = ["CodeUpload", "package_archive", "upload_code"]

logger = logging.getLogger("dask_reservoir")

_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
"""The time stamp of every file in the archive (the archive's bytes follow the code only)."""

PACKAGE_DIR = Path(__file__).resolve().parent.parent
"""The directory this process imports dask_reservoir from (the sources uploaded)."""

_LOCK = threading.Lock()
_USERS: dict[str, int] = {}
"""Open reservoirs (and subsets) per plugin name, which names the client too."""


@lru_cache(maxsize=1)
def package_archive() -> tuple[bytes, str]:
    """A zip of the package's sources (``.py`` files and ``py.typed``) and its digest.

    Examples
    --------
    >>> archive, digest = package_archive()
    >>> import io, zipfile
    >>> "dask_reservoir/_worker/calls.py" in zipfile.ZipFile(io.BytesIO(archive)).namelist()
    True
    >>> package_archive()[1] == digest  # the same code, the same digest
    True
    """
    root = PACKAGE_DIR
    files = sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix == ".py" or p.name == "py.typed"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zipped.writestr(info, path.read_bytes())
    archive = buffer.getvalue()
    return archive, hashlib.blake2b(archive, digest_size=8).hexdigest()


class CodeUpload:
    """The plugins one reservoir registered on its client's cluster (see :func:`upload_code`).

    Examples
    --------
    >>> CodeUpload(None, "dask_reservoir-code-0123")
    <CodeUpload: dask_reservoir-code-0123 released=False>
    """

    def __init__(self, client: Client | None, name: str) -> None:
        self._client, self.name, self.released = client, name, False

    def share(self) -> CodeUpload:
        """Another holder of the same plugins (a subset's): they stay until both are released."""
        if self._client is None or self.released:
            return CodeUpload(None, self.name)
        with _LOCK:
            _USERS[self.name] += 1
        return CodeUpload(self._client, self.name)

    def release(self) -> None:
        """Say this reservoir no longer needs the code: the last one on its client unregisters it (idempotent)."""
        if self.released or self._client is None:
            self.released = True
            return
        self.released = True
        with _LOCK:
            _USERS[self.name] -= 1
            last = _USERS[self.name] == 0
            if last:
                del _USERS[self.name]
        if not last or self._client.status not in ("running", "connecting", "newly-created"):
            return
        for unregister in (self._client.unregister_worker_plugin, self._client.unregister_scheduler_plugin):
            try:
                unregister(self.name)
            except Exception as exc:  # the scheduler is gone, or someone removed it: nothing to undo
                logger.debug("dask_reservoir: could not unregister %s: %r", self.name, exc)

    def __repr__(self) -> str:
        return f"<CodeUpload: {self.name} released={self.released}>"


def upload_code(client: Client) -> CodeUpload:
    """Make this ``dask_reservoir`` importable on ``client``'s scheduler and on all its workers.

    Registers :class:`~dask_reservoir._runtime.code_plugins.CodeOnScheduler` and
    :class:`~dask_reservoir._runtime.code_plugins.CodeOnWorkers` (pickled by value) unless
    another open reservoir on ``client`` did; processes that have this version installed are
    left as they are.

    Raises
    ------
    RuntimeError
        When the plugins cannot be registered (a scheduler that refuses pickled plugins, say), or
        a worker or the scheduler already imported another version of dask_reservoir.
    """
    archive, digest = package_archive()
    version = installed_version() or "unknown"  # as __version__ says it
    # one registration per client: another client of the cluster closing never removes ours
    name = f"dask_reservoir-code-{digest}-{client.id}"
    with _LOCK:
        if _USERS.get(name):
            _USERS[name] += 1
            return CodeUpload(client, name)
        try:
            _register(client, archive, name=name, version=version, digest=digest)
        except Exception as exc:
            raise RuntimeError(
                f"could not upload dask_reservoir's code to the cluster of {client}: "
                f"{type(exc).__name__}: {exc}. Install dask_reservoir {version} on the scheduler and "
                "the workers and pass upload_code=False"
            ) from exc
        _USERS[name] = 1
    logger.debug("dask_reservoir: registered %s (%d bytes) on %s", name, len(archive), client)
    return CodeUpload(client, name)


def _register(client: Client, archive: bytes, *, name: str, version: str, digest: str) -> None:
    """Register both plugins, their classes pickled by value (the cluster cannot import them)."""
    with PICKLE_LOCK:
        cloudpickle.register_pickle_by_value(code_plugins)
        try:
            origin = str(PACKAGE_DIR)
            client.register_plugin(
                CodeOnScheduler(archive, version=version, digest=digest, origin=origin), name=name
            )
            try:
                client.register_plugin(
                    CodeOnWorkers(archive, version=version, digest=digest, origin=origin), name=name
                )
            except Exception:  # the scheduler keeps a worker plugin whose setup failed: remove both
                for unregister in (client.unregister_worker_plugin, client.unregister_scheduler_plugin):
                    with contextlib.suppress(Exception):
                        unregister(name)
                raise
        finally:
            cloudpickle.unregister_pickle_by_value(code_plugins)
