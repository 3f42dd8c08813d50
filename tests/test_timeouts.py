"""job_timeout on the worker: abandoned calls are bounded and keep the caller's context."""

from __future__ import annotations

import contextvars
import threading

import pytest

from dask_reservoir import JobTimeoutError
from dask_reservoir._worker import timeouts
from tests.utils import poll_for


def test_abandoned_calls_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "MAX_ABANDONED_CALLS", 2)
    hold = threading.Event()
    started: list[int] = []

    def stuck(row: dict) -> dict:
        started.append(row["i"])
        hold.wait(60)
        return {"i": row["i"]}

    try:
        for i in range(2):
            with pytest.raises(JobTimeoutError, match=r"ran longer than job_timeout=0\.05 s"):
                timeouts.call_with_timeout(stuck, {"i": i}, i, 0.05)
        with pytest.raises(
            JobTimeoutError,
            match=r"not started for UID 2: 2 calls abandoned .* still run in this worker process \(at most 2\)",
        ):
            timeouts.call_with_timeout(stuck, {"i": 2}, 2, 0.05)
        assert started == [0, 1]  # the third call never ran
    finally:
        hold.set()
    poll_for(lambda: timeouts._Abandoned.running == 0, what="the abandoned calls to return")
    assert timeouts.call_with_timeout(stuck, {"i": 3}, 3, 30) == {"i": 3}


def test_timeout_call_keeps_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("worker context")
    assert timeouts.call_with_timeout(lambda row: var.get(), {}, 0, 30) == "worker context"
