"""``job_timeout`` on the worker: each call runs in a thread, abandoned when it runs too long.

At most :data:`MAX_ABANDONED_CALLS` abandoned calls run in one worker process.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from dask_reservoir.errors import JobTimeoutError

__all__ = ["MAX_ABANDONED_CALLS"]

MAX_ABANDONED_CALLS = 4
"""Most calls abandoned by ``job_timeout`` that may still run in one worker process.

Python cannot interrupt a call, so an abandoned call goes on in a daemon thread
until it returns.  Beyond this many, a new call first waits (within its own
``job_timeout``) for one of them to return, else fails with a
:class:`~dask_reservoir.errors.JobTimeoutError` saying how many still run.
"""


class _Abandoned:
    """Calls abandoned by ``job_timeout`` that still run in this process."""

    cond = threading.Condition()
    running = 0


def call_with_timeout(
    function: Callable[[dict[str, Any]], Any], record: dict[str, Any], uid: Hashable, timeout: float
) -> Any:
    """Call ``function(record)`` in a thread with the worker's context; give up after ``timeout``."""
    deadline = time.monotonic() + timeout
    with _Abandoned.cond:
        while _Abandoned.running >= MAX_ABANDONED_CALLS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeoutError(
                    f"function_to_run was not started for UID {uid!r}: {_Abandoned.running} calls "
                    f"abandoned after job_timeout={timeout:g} s still run in this worker process "
                    f"(at most {MAX_ABANDONED_CALLS}) and none returned within job_timeout",
                    uid=uid,
                )
            _Abandoned.cond.wait(remaining)
    box: dict[str, Any] = {}
    state = {"done": False, "abandoned": False}
    context = contextvars.copy_context()  # distributed.get_worker() works inside

    def target() -> None:
        try:
            box["value"] = context.run(function, record)
        except BaseException as exc:
            box["error"] = exc
        finally:
            with _Abandoned.cond:
                state["done"] = True
                if state["abandoned"]:
                    _Abandoned.running -= 1
                _Abandoned.cond.notify_all()

    thread = threading.Thread(target=target, name=f"dask_reservoir-job-{uid!s:.32}", daemon=True)
    thread.start()
    with _Abandoned.cond:
        while not state["done"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state["abandoned"] = True
                _Abandoned.running += 1
                raise JobTimeoutError(
                    f"function_to_run ran longer than job_timeout={timeout:g} s for UID {uid!r}; "
                    f"the job was abandoned ({_Abandoned.running} abandoned calls still run in "
                    f"this worker process, at most {MAX_ABANDONED_CALLS})",
                    uid=uid,
                )
            _Abandoned.cond.wait(remaining)
    if "error" in box:
        raise box["error"]
    return box["value"]
