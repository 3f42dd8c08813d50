"""The loader process: dask's client, the runner and the results, off the consumer's process.

With ``loader="process"`` (or ``"auto"`` where it applies, see :func:`choose_loader`)
a child Python (:mod:`~dask_reservoir._runtime.loader.child`) connects its own client to
the reservoir's scheduler and runs the job runner there.  Task results, dask's event
loop and its (de)serialisation then cost the consumer's process nothing: it only
receives finished entries over a socket (pickle protocol 5) into a
:class:`~dask_reservoir._runtime.loader.mirror.LedgerMirror`, on one thread, and stores them when the
consumer ingests, as in thread mode.  :class:`LoaderProcess` offers the
:class:`~dask_reservoir._runtime.runner.JobRunner` methods the reservoir calls (both are a
:class:`~dask_reservoir._runtime.protocols.RunnerLike`, built by :func:`make_runner`), so
snapshots, UID keys, replacement rules and the memory bound are the same code in both modes.

The process is started with ``subprocess`` (``python -c``), not ``multiprocessing``: the
user's ``__main__`` is never imported again, and the function travels by value with
cloudpickle when it lives there.  It exits when told to stop, or when the consumer's
end of the socket closes (the consumer's process died), after releasing its tasks.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import dask.config

from dask_reservoir._core.checkpoint import ResumePoint
from dask_reservoir._core.options import LOADERS, ReservoirOptions
from dask_reservoir._core.performance import Performance
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._runtime.cluster import ClientHandle
from dask_reservoir._runtime.loader.child import RELEASE_SECONDS, dumps
from dask_reservoir._runtime.loader.mirror import LedgerMirror
from dask_reservoir._runtime.protocols import JOIN_TIMEOUT, WAIT_SLICE, LedgerLike, RunnerLike, raise_fatal
from dask_reservoir._runtime.runner import runner_for
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import Source
from dask_reservoir._worker.shipping import dumps_for_process

__all__ = ["CONFIG_KEY", "LOADERS", "LoaderProcess", "choose_loader", "make_runner"]

logger = logging.getLogger("dask_reservoir")

CONFIG_KEY = "dask_reservoir.loader"
"""dask config key read when ``loader`` is None (default ``"thread"``):
``dask.config.set({"dask_reservoir.loader": "auto"})``, or the environment variable
``DASK_DASK_RESERVOIR__LOADER=auto``."""

ASK_SECONDS = 10.0
"""Longest wait for the loader's answer to a request (``release_quarantine``)."""

_PENDING = object()

_CHILD = "import sys; from dask_reservoir._runtime.loader.child import main; main(int(sys.argv[1]))"


def choose_loader(loader: str | None, handle: ClientHandle, source: Source) -> tuple[str, str]:
    """``("process" | "thread", why)``: where the jobs of a reservoir run from.

    ``loader`` None reads the dask config key :data:`CONFIG_KEY` (default ``"thread"``).
    The loader process needs a scheduler it can reach by address (not a threaded
    ``LocalCluster``'s ``inproc://``) and a pandas source (a dask source's persisted
    partitions belong to the consumer's client).  ``"auto"`` falls back to the thread
    when either is missing; ``"process"`` raises ``ValueError`` instead.
    """
    if loader is None:
        loader = str(dask.config.get(CONFIG_KEY, "thread"))
        if loader not in LOADERS:
            raise ValueError(f"the dask config {CONFIG_KEY!r} must be one of {list(LOADERS)}, got {loader!r}")
    if loader == "thread":
        return "thread", "loader='thread'"
    address = handle.address
    problem = ""
    if not address or address.startswith("inproc://"):
        problem = f"the scheduler is in this process ({address or 'no address'}): a threaded cluster"
    elif isinstance(source, DaskSource):
        problem = "the source is a dask DataFrame, whose persisted partitions belong to this process's client"
    if not problem:
        return "process", f"loader={loader!r}: a loader process owns the dask client"
    if loader == "process":
        raise ValueError(f"loader='process' cannot be used: {problem}; use loader='thread' or 'auto'")
    return "thread", f"loader='auto': {problem}"


class LoaderProcess:
    """The :class:`~dask_reservoir._runtime.runner.JobRunner` interface, served by a loader process.

    Parameters
    ----------
    handle : ClientHandle
        The consumer's client: the loader connects to its scheduler address (with its
        ``security``); with the embedded cluster, the workers import what this process imports.
    source, function, options, order, skip_first_pass, resume
        As for :func:`~dask_reservoir._runtime.runner.runner_for`; pickled with cloudpickle.
    """

    def __init__(
        self,
        handle: ClientHandle,
        source: Source,
        function: Any,
        options: ReservoirOptions,
        order: Sampler,
        *,
        skip_first_pass: Sequence[Hashable] = (),
        perf_sending: Performance | None = None,
        perf_receiving: Performance | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        settings = {
            "resume": resume,
            "address": handle.address,
            "security": getattr(handle.client, "security", None),
            "local_workers": handle.embedded,
            "transient_workers": handle.transient_workers,
            "source": source,
            "function": function,
            "options": replace(options, collate_fn=None),  # the loader never collates
            "order": order,
            "skip_first_pass": list(skip_first_pass),
            "log_level": logging.getLogger("distributed").getEffectiveLevel(),
        }
        try:
            self._settings = dumps_for_process(settings, function)
        except Exception as exc:
            raise TypeError(
                f"loader='process' needs the source, function_to_run and samplers to pickle: {exc!r}"
            ) from exc
        self.perf_sending = perf_sending or Performance()
        self.perf_receiving = perf_receiving or Performance()
        self.ledger = LedgerMirror(self._send, self._ask)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._pending: list[bytes] | None = []  # messages sent before the settings went
        self._answers: dict[int, Any] = {}
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._receive, name=f"dask_reservoir-loader-{id(self):x}", daemon=True
        )

    # ------------------------------------------------------------------ the JobRunner interface
    def start(self) -> None:
        """Start the loader process and the receiving thread (idempotent)."""
        if self._proc is not None or self._closed:
            return
        parent, child = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._thread.start()

    def take(self, limit: int | None = None) -> list[Any]:
        """Remove and return up to ``limit`` received entries, oldest first (the loader is told)."""
        return self.ledger.take(limit)

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the loader stops, or ``timeout`` passes."""
        self.ledger.wait(min(timeout, WAIT_SLICE))

    def poke(self) -> None:
        """Wake the loader's runner now."""
        self._send(("poke",))

    def check(self) -> None:
        """Raise, in the caller's thread, what stopped the loader, if anything."""
        raise_fatal(self.ledger.fatal)

    def close(self, timeout: float = JOIN_TIMEOUT + RELEASE_SECONDS) -> None:
        """Stop the loader and join the receiving thread (idempotent).

        The loader releases its tasks and exits; past ``timeout`` it is killed.
        """
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            self._send(("stop",))
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "dask_reservoir loader process %d did not stop within %.0f s: killed", proc.pid, timeout
                )
                proc.kill()
                proc.wait(WAIT_SLICE * 10)
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)  # it reads the last counters, then the end of the stream
        self._stop.set()
        if self._conn is not None:
            self._conn.close()
        self.ledger.close()

    def wait_released(self, timeout: float) -> bool:
        """After :meth:`close`: whether the loader process exited (it releases its tasks first)."""
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    @property
    def pid(self) -> int | None:
        """The loader process's id (None before :meth:`start`)."""
        return None if self._proc is None else self._proc.pid

    def __repr__(self) -> str:
        c = self.ledger.counters()
        return (
            f"<LoaderProcess: pid={self.pid} in_flight={c.rows_in_flight} waiting={c.entries_waiting} "
            f"done={c.jobs_completed} status={c.status}>"
        )

    # ------------------------------------------------------------------ messages
    def _send(self, message: tuple[Any, ...]) -> None:
        data = dumps(message)
        with self._send_lock:
            if self._pending is not None:
                self._pending.append(data)
                return
            if self._conn is None:
                return
            try:
                self._conn.send_bytes(data)
            except OSError:  # the loader is gone: the receiving thread reports it
                pass

    def _ask(self, kind: str, payload: Any) -> Any:
        number = next(self._numbers)
        cond = self.ledger.cond
        with cond:
            self._answers[number] = _PENDING
        self._send(("ask", number, kind, payload))
        deadline = time.monotonic() + ASK_SECONDS
        with cond:
            try:
                while self._answers[number] is _PENDING:
                    raise_fatal(self.ledger.fatal)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        raise TimeoutError(
                            f"the dask_reservoir loader process did not answer {kind!r} within {ASK_SECONDS:g} s"
                        )
                    cond.wait(min(remaining, WAIT_SLICE))
                return self._answers[number]
            finally:
                self._answers.pop(number, None)

    def _configure(self, conn: Connection) -> None:
        """Send ``sys.path`` and the settings, then what was sent meanwhile."""
        conn.send_bytes(pickle.dumps(list(sys.path)))
        conn.send_bytes(self._settings)
        with self._send_lock:
            for data in self._pending or ():
                conn.send_bytes(data)
            self._pending = None

    def _receive(self) -> None:
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:  # pragma: no cover - only started by start()
            return
        try:
            self._configure(conn)
            while not self._stop.is_set():
                if not conn.poll(WAIT_SLICE):
                    if proc.poll() is not None:
                        raise EOFError
                    continue
                self._dispatch(pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            if not self._closed:
                code = proc.poll()
                self.ledger.stopped(
                    RuntimeError(
                        f"the dask_reservoir loader process {proc.pid} exited unexpectedly (code {code})"
                    ),
                    "lost",
                )
        except BaseException as exc:  # a message that cannot be read here: stop, never stall
            error = RuntimeError(
                f"could not receive from the dask_reservoir loader process {proc.pid}: {exc!r}"
            )
            error.__cause__ = exc
            self.ledger.stopped(error, "lost")
            conn.close()  # the loader sees the end of its stream and stops

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ship":
            _, items, errors, state = message
            self.perf_sending.load(*state.sending)
            self.perf_receiving.load(*state.receiving)
            self.ledger.receive(items, errors, state)
        elif kind == "answer":
            _, number, answer = message
            with self.ledger.cond:
                if number in self._answers:
                    self._answers[number] = answer
                self.ledger.cond.notify_all()
        elif kind == "stopped":
            _, fatal, status = message
            self.ledger.stopped(fatal, status)


def make_runner(
    handle: ClientHandle,
    source: Source,
    function: Any,
    options: ReservoirOptions,
    order: Sampler,
    *,
    loader: str,
    skip_first_pass: Sequence[Hashable] = (),
    perf_sending: Performance | None = None,
    perf_receiving: Performance | None = None,
    resume: ResumePoint | None = None,
) -> RunnerLike:
    """The runner of a reservoir (not started): a :class:`LoaderProcess` or a thread's ``JobRunner``.

    ``loader`` is the mode :func:`choose_loader` chose: ``"process"`` for a loader process,
    else the :func:`~dask_reservoir._runtime.runner.runner_for` thread runner; the other
    arguments are theirs.  Either is returned as a
    :class:`~dask_reservoir._runtime.protocols.RunnerLike`, which makes mypy check that both
    satisfy it.
    """
    if loader == "process":
        return LoaderProcess(
            handle,
            source,
            function,
            options,
            order,
            skip_first_pass=skip_first_pass,
            perf_sending=perf_sending,
            perf_receiving=perf_receiving,
            resume=resume,
        )
    return runner_for(
        handle,
        source,
        function,
        options,
        order,
        skip_first_pass=skip_first_pass,
        perf_sending=perf_sending,
        perf_receiving=perf_receiving,
        resume=resume,
    )


if TYPE_CHECKING:  # for mypy only: each ledger satisfies LedgerLike (make_runner checks the runners)
    from dask_reservoir._core.ledger import Ledger

    def _ledgers_conform(ledger: Ledger, mirror: LedgerMirror) -> list[LedgerLike]:
        return [ledger, mirror]
