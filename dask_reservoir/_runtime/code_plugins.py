"""dask_reservoir's own code on a cluster that does not have it installed: two dask plugins.

The scheduler unpickles every task's function (``dask_reservoir._worker.calls.run_rows``, say)
and the workers run it, so both must import ``dask_reservoir``.  When a cluster's environment
lacks it, :mod:`~dask_reservoir._runtime.code_upload` registers :class:`CodeOnScheduler` and
:class:`CodeOnWorkers` through distributed's plugin mechanism: the scheduler hands the worker
plugin to every worker, those that join later included, before they run a task.

Each plugin carries a zip of the package's sources and :func:`install_code` unpacks it into the
process's local directory and puts it first on ``sys.path``.  A process that already imports
this version of ``dask_reservoir`` from an installed distribution is left as it is (the fast
path: the plugin costs one version check).

This module imports only the standard library and distributed, and is pickled by value: the
processes that receive the plugins do not have ``dask_reservoir``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import io
import os
import sys
import tempfile
import zipfile
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

__all__ = ["CodeOnScheduler", "CodeOnWorkers", "install_code", "installed_version"]

PACKAGE = "dask_reservoir"


def installed_version() -> str | None:
    """The version of the installed ``dask_reservoir`` distribution here, None without one."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_code(archive: bytes, *, version: str, digest: str, directory: str, origin: str = "") -> str:
    """Make ``dask_reservoir`` (the sources in ``archive``) importable in this process.

    Returns ``"installed"`` when this process already has the same version installed,
    ``"imported"`` when it already imports the uploaded code or the client's own files
    (``origin``, the client's package directory: a worker in the client's process, or one
    started from the same checkout), and ``"uploaded"`` when the archive was unpacked into
    ``directory`` and put first on ``sys.path``.

    Raises
    ------
    RuntimeError
        When this process already imported another ``dask_reservoir`` (one Python process
        cannot hold two): restart the workers, or install the client's version on them.
    """
    target = os.path.join(directory, f"dask-reservoir-code-{digest}")
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None:
        loaded_from = os.path.realpath(getattr(loaded, "__file__", "") or "")
        if loaded_from.startswith(os.path.realpath(target) + os.sep):
            return "imported"
        if origin and os.path.dirname(loaded_from) == origin:
            return "imported"
        if version != "unknown" and installed_version() == version and target not in sys.path:
            return "installed"
        raise RuntimeError(
            f"this process already imported dask_reservoir from {loaded_from!r} "
            f"(version {getattr(loaded, '__version__', 'unknown')}); the client runs version "
            f"{version} (code {digest}): restart the workers (client.restart()) or install the "
            "client's version of dask_reservoir on the cluster"
        )
    if version != "unknown" and installed_version() == version:
        return "installed"
    if not os.path.isdir(target):
        staging = f"{target}.{os.getpid()}.tmp"
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            zipped.extractall(staging)
        try:
            os.rename(staging, target)  # another worker on this machine may have won the race
        except OSError:
            if not os.path.isdir(target):
                raise
    if target not in sys.path:
        sys.path.insert(0, target)
    importlib.invalidate_caches()
    return "uploaded"


class _CodePlugin:
    """What both plugins carry: the sources and how to recognise them (see :func:`install_code`)."""

    idempotent = True  # registering the same code again is a no-op

    def __init__(self, archive: bytes, *, version: str, digest: str, origin: str) -> None:
        self.archive, self.version, self.digest, self.origin = archive, version, digest, origin

    def install(self, directory: str) -> str:
        """Install the code in this process, unpacking it into ``directory`` if needed."""
        return install_code(
            self.archive, version=self.version, digest=self.digest, directory=directory, origin=self.origin
        )


class CodeOnWorkers(_CodePlugin, WorkerPlugin):
    """A worker plugin that makes the client's ``dask_reservoir`` importable on every worker.

    Parameters
    ----------
    archive : bytes
        A zip of the ``dask_reservoir`` package's sources.
    version, digest : str
        The client's version of ``dask_reservoir`` and a digest of ``archive``.
    origin : str
        The directory the client imports ``dask_reservoir`` from.
    """

    def setup(self, worker: Any) -> None:
        """Install the code on ``worker`` (see :func:`install_code`)."""
        self.install(worker.local_directory)


class CodeOnScheduler(_CodePlugin, SchedulerPlugin):
    """The scheduler's half of :class:`CodeOnWorkers`: it unpickles the tasks' functions."""

    async def start(self, scheduler: Any) -> None:
        """Install the code in the scheduler's process (see :func:`install_code`)."""
        self.install(getattr(scheduler, "local_directory", None) or tempfile.gettempdir())
