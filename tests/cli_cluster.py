"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1, for remote-cluster tests.

The processes run in a temporary directory with a ``PYTHONPATH`` that does not
hold this checkout, so they cannot import the test modules: functions defined
here must travel by value.  Every process is started in its own session and
stopped by its process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from tests.utils import poll_for

DASK = [sys.executable, "-m", "dask"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DASK_LOGGING__DISTRIBUTED"] = "critical"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


@dataclass
class CliCluster:
    """Handles on the processes of a loopback cluster."""

    directory: Path
    scheduler_file: Path
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    dask: list[str] = field(default_factory=lambda: list(DASK))
    """The ``dask`` command: this Python's, or another environment's."""

    def start_scheduler(self) -> None:
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._spawn(
            [
                *self.dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            "scheduler",
        )

        def ready() -> bool:
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return False
            return True

        poll_for(ready, timeout=60, period=0.05, what="the dask scheduler to write its file")

    def start_workers(
        self,
        nworkers: int = 2,
        *,
        nanny: bool = True,
        env: dict[str, str] | None = None,
        name: str = "workers",
    ) -> subprocess.Popen[bytes]:
        """Start ``nworkers`` workers (``env`` added to the cluster's environment); return the last process."""
        args = [
            *self.dask,
            "worker",
            "--scheduler-file",
            str(self.scheduler_file),
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--death-timeout",
            "5",
        ]
        extra = {**self.env, **(env or {})}
        if nanny:
            self.workers.append(self._spawn([*args, "--nworkers", str(nworkers)], name, extra))
        else:
            for i in range(nworkers):
                self.workers.append(self._spawn([*args, "--no-nanny"], f"{name}-{i}", extra))
        return self.workers[-1]

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process (and its children) started here, and wait for it."""
        _kill(proc, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill(proc, signal.SIGKILL)
            proc.wait(10)

    def _spawn(
        self, args: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{name}.log", "ab")
        return subprocess.Popen(
            args,
            cwd=self.directory,
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def client(self, **kwargs: object) -> Client:
        return Client(self.address, set_as_default=False, timeout="10s", **kwargs)  # type: ignore[arg-type]

    def wait_for_workers(self, n: int) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=60)

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            _kill(self.scheduler, signal.SIGKILL)

    def stop(self) -> None:
        procs = [p for p in [self.scheduler, *self.workers] if p is not None]
        for p in procs:
            _kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(p, signal.SIGKILL)
                p.wait(10)


def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def cli_cluster(
    directory: Path,
    *,
    nworkers: int = 2,
    nanny: bool = True,
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> Iterator[CliCluster]:
    """Start a scheduler and ``nworkers`` single-thread workers; stop them all afterwards.

    ``python``: the interpreter of another environment to run them in (default: this one).
    """
    cluster = CliCluster(directory=directory, scheduler_file=directory / "scheduler.json", env=_env(env))
    if python is not None:
        cluster.dask = [python, "-m", "dask"]
    try:
        cluster.start_scheduler()
        cluster.start_workers(nworkers, nanny=nanny)
        cluster.wait_for_workers(nworkers)
        yield cluster
    finally:
        cluster.stop()
