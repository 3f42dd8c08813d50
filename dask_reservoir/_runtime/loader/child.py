"""What runs inside the loader process: a dask client, the job runner, and the shipping loop.

Started by :class:`~dask_reservoir._runtime.loader.parent.LoaderProcess` as a ``python -c`` calling
:func:`main` with ``FD``, where ``FD`` is its end of a socket
pair.  It reads the parent's ``sys.path`` and then its settings (cloudpickled: the
source, the function, the options, the source sampler), connects its own client to
the scheduler, and runs the same :class:`~dask_reservoir._runtime.runner.JobRunner` as a
thread-mode reservoir.  Its main thread ships what the ledger holds: finished entries
(:meth:`~dask_reservoir._core.ledger.Ledger.ship`, still counted in the bound until the
consumer acknowledges them), job errors and a copy of the counters; a second thread
reads the consumer's messages.  When the consumer says stop, or its end of the pipe
closes (the consumer's process died), the runner is closed, every task released, and
the process exits.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from dask_reservoir._core.blocks import compact
from dask_reservoir._runtime.loader.mirror import LoaderState
from dask_reservoir.errors import JobError

__all__ = ["HEARTBEAT_SECONDS", "SHIP_MAX", "dumps", "main"]

logger = logging.getLogger("dask_reservoir")

HEARTBEAT_SECONDS = 0.05
"""Longest time between two reports of the counters when nothing is shipped."""

SHIP_MAX = 256
"""Most entries in one message to the consumer."""

PARENT_CHECK_SECONDS = 1.0
"""How often the loader checks that the consumer's process still lives while nothing arrives."""

RELEASE_SECONDS = 5.0
"""How long the loader waits, when it stops, for the scheduler to forget its tasks."""


def dumps(message: Any) -> bytes:
    """Pickle a message (protocol 5); what plain pickle refuses goes through cloudpickle."""
    try:
        return pickle.dumps(message, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(message, protocol=5)


def portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling, else a ``RuntimeError`` carrying its text."""
    if exc is None:
        return None
    try:
        pickle.loads(dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class Loop:
    """The loader process's two threads around one :class:`~dask_reservoir._runtime.runner.JobRunner`."""

    def __init__(self, conn: Connection, runner: Any) -> None:
        self._conn = conn
        self._runner = runner
        self._ledger = runner.ledger
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="dask_reservoir-loader-reader", daemon=True)

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one message to the consumer; a consumer gone stops the loop."""
        self._send_bytes(dumps(message))

    def _send_bytes(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._conn.send_bytes(data)
        except OSError:
            self._stop.set()

    def run(self) -> None:
        """Ship until told to stop, then close the runner."""
        self._reader.start()
        reported_stop = False
        next_report = 0.0
        try:
            while not self._stop.is_set():
                if self._ledger.fatal is not None:
                    if not reported_stop:
                        reported_stop = True
                        # what stopped it first: counters saying "lost" must never reach the
                        # consumer before the error that goes with them (it would serve, unwarned)
                        self.send(("stopped", portable(self._ledger.fatal), self._ledger.status))
                        self._ship()
                    self._stop.wait(HEARTBEAT_SECONDS)
                    continue
                now = time.monotonic()
                if self._ship(force=now >= next_report):
                    next_report = now + HEARTBEAT_SECONDS
                self._ledger.wait(HEARTBEAT_SECONDS)
        finally:
            self._runner.close()
            self._runner.wait_released(RELEASE_SECONDS)
            self.send(("ship", [], [], self.state()))  # the counters after closing

    def _ship(self, *, force: bool = True) -> bool:
        items = compact(self._ledger.ship(SHIP_MAX))
        errors = []
        while (error := self._ledger.pop_error()) is not None:
            error.__cause__ = portable(error.__cause__)  # the cause travels with the error
            errors.append(error)
        if not (items or errors or force):
            return False
        try:
            data = dumps(("ship", items, errors, self.state()))
        except Exception:  # some result cannot travel: it is that UID's failure, the rest goes
            items = self._shippable(items)
            errors = [e if _pickles(e) else JobError(str(e), uid=e.uid) for e in errors]
            data = dumps(("ship", items, errors, self.state()))
        self._send_bytes(data)
        return True

    def _shippable(self, items: list[Any]) -> list[Any]:
        """The items that pickle; the others are rejected (a failure of their UID) and acknowledged."""
        from dask_reservoir._core.store import StoreError

        good, bad = [], []
        for item in items:
            try:
                dumps(item)
                good.append(item)
            except Exception as exc:
                bad.append(item.uid)
                text = f"the result of UID {item.uid!r} cannot be sent to the consumer's process: {exc!r}"
                self._ledger.rejected(item.uid, StoreError(text), item.position)
        self._ledger.acknowledge(bad)
        return good

    def state(self) -> LoaderState:
        ledger, runner = self._ledger, self._runner
        return LoaderState(
            counters=ledger.counters(),
            recent_load_seconds=tuple(ledger.recent_load_seconds()),
            mean_load_seconds=ledger.mean_load_seconds,
            rows_per_job=ledger.rows_per_job,
            max_rows=ledger.max_rows,
            max_jobs=ledger.max_jobs,
            sending=runner.perf_sending.totals(),
            receiving=runner.perf_receiving.totals(),
        )

    def _read(self) -> None:
        parent = os.getppid()
        try:
            while not self._stop.is_set():
                if not self._conn.poll(PARENT_CHECK_SECONDS):
                    # the consumer died, though a child it forked may keep our socket open
                    if os.getppid() != parent:
                        break
                    continue
                message = pickle.loads(self._conn.recv_bytes())
                self._handle(message)
        except (EOFError, OSError):  # the consumer closed its end, or its process died
            pass
        finally:
            self._stop.set()
            with self._ledger.cond:
                self._ledger.cond.notify_all()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "taken":
            self._ledger.acknowledge(message[1])
            self._runner.poke()
        elif kind == "rejected":
            from dask_reservoir._core.store import StoreError

            self._ledger.rejected(message[1], StoreError(message[2]), message[3])
        elif kind == "poke":
            self._runner.poke()
        elif kind == "ask":
            _, number, what, payload = message
            answer: Any = None
            if what == "release":
                answer = self._ledger.release_quarantine(payload)
                if answer:
                    self._runner.poke()
            elif what == "position":
                answer = self._ledger.source_position()
            elif what == "checkpoint":
                answer = self._ledger.checkpoint()
            self.send(("answer", number, answer))
        elif kind == "stop":
            self._stop.set()


def _pickles(obj: object) -> bool:
    try:
        dumps(obj)
    except Exception:
        return False
    return True


def _connect(settings: dict[str, Any]) -> Any:
    from distributed import Client

    from dask_reservoir._runtime.cluster import ClientHandle, connect_timeout

    client = Client(
        settings["address"],
        security=settings["security"],
        set_as_default=False,
        timeout=connect_timeout(),
        direct_to_workers=settings["local_workers"],
    )
    return ClientHandle(
        client,
        owned=True,
        local_workers=settings["local_workers"],
        transient_workers=settings["transient_workers"],
    )


def main(fd: int) -> None:
    """Run a loader on the socket ``fd`` until the consumer says stop or goes away."""
    conn = Connection(fd)
    sys.path[:] = pickle.loads(conn.recv_bytes())
    import cloudpickle

    from dask_reservoir._runtime.runner import runner_for

    handle = None
    try:
        settings = cloudpickle.loads(conn.recv_bytes())
        logging.getLogger("distributed").setLevel(settings["log_level"])
        handle = _connect(settings)
        runner = runner_for(
            handle,
            settings["source"],
            settings["function"],
            settings["options"],
            settings["order"],
            skip_first_pass=settings["skip_first_pass"],
            resume=settings["resume"],
        )
        runner.start()
        Loop(conn, runner).run()
    except BaseException as exc:
        try:
            conn.send_bytes(dumps(("stopped", portable(exc), "lost")))
        except OSError:
            pass
        raise
    finally:
        if handle is not None:
            handle.close()
        conn.close()
