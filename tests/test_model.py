"""Model-based test of the public API: a Hypothesis state machine over whole reservoirs.

Each example draws a source (int64, uint64 >= 2**63 or str UIDs), the constructor's
options (capacity and minimum, batch size and ``drop_last``, replacement size,
``deterministic``, source and reservoir samplers including weighted, balanced and
unseeded ones, rank/world_size, ``batched``, ``batch_format``, ``passes`` (mostly None,
else 1 or 2), ``transform`` (none, per sample or ``transform_batched``, with or without
``transform_seed``), ``cache`` (a fresh directory per example, not with ``batched``) and
``max_reservoir_bytes`` (none, or a bound holding a few entries, as an int or a str),
``priority``, ``annotations`` and ``upload_code``) and a
set of UIDs whose job misbehaves (raises, returns nothing, returns a value of another
shape or dtype).  Then it runs a drawn sequence of the operations users do: whole
epochs, held and dropped iterators, exceptions inside an epoch, ``set_epoch``,
``state_dict`` then a restore into a new reservoir, ``subsample_uids``, ``to_pandas``,
``release_quarantine``, ``wait_loaded`` (with ``passes``), ``close``.

Every value is a function of its UID (:func:`code`), so every row served anywhere is
checked against the UID it is served under.  The transform adds a random offset to ``x``
and records it in an ``off`` column: the check subtracts it (and requires it on every
numeric served row), and ``to_pandas()`` must never show it (the stored values are
untouched).  The plain-Python model knows which UIDs can be stored, so ``iter()`` must
raise :class:`JobError` exactly when the minimum is out of reach (with ``passes``, a
finished run below the minimum serves what it loaded: a JobError is then certain only
when no row of this rank's passes can be stored, and excluded only when the storable
rows of those passes reach the minimum).  Every call runs under a deadline (a stall fails
the test, with the threads' stacks), and after every step: the row counters balance,
``reservoir_bytes <= max_reservoir_bytes``, ``cache_hits + cache_misses <= rows_submitted``
(none without ``cache``), and nothing is pinned
once every iterator is gone.  After a burst of epochs (without ``passes``), ingestion
must have gone on whatever iterators the consumer holds.  ``wait_loaded()`` must end
with ``loading_done``, nothing in flight or waiting, ``rows_submitted`` equal to the
rows of this rank's passes (a permutation source sampler, before any restore or
release), ``cache_hits + cache_misses == rows_loaded``, ``to_pandas()`` within this
rank's shards and, when the source sampler's passes are known and nothing can be
evicted (capacity and byte bound) or refused, exactly the storable UIDs of this rank's
passes; after it, ``rows_submitted`` never grows again (until ``release_quarantine``
releases a UID).  A reservoir restored on the cache directory of one that held entries
must read some of them back as cache hits.

``make test`` runs a small, fixed budget (``derandomize``); ``make soak`` runs many more
random examples (``DASK_RESERVOIR_MODEL_EXAMPLES``, ``DASK_RESERVOIR_MODEL_STEPS``,
``DASK_RESERVOIR_MODEL_RANDOM=1``; ``DASK_RESERVOIR_MODEL_SHRINK=1`` shrinks a failure).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dask_reservoir import (
    AsyncReservoir,
    BalancedSampler,
    IteratorExpiredError,
    JobError,
    RandomSampler,
    ReservoirClosedError,
    SequentialSampler,
    WeightedSampler,
)
from tests.utils import poll_for, scheduler_task_count, threaded_cluster

EXAMPLES = int(os.environ.get("DASK_RESERVOIR_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("DASK_RESERVOIR_MODEL_STEPS", "14"))
CALL_SECONDS = float(os.environ.get("DASK_RESERVOIR_MODEL_CALL_SECONDS", "60"))
"""Longest one public call may take before the test calls it a stall."""

pytestmark = pytest.mark.timeout(max(300, EXAMPLES * STEPS * 10))

WIDTH = 3  # the length of a good value's "x"
FAILURE_KINDS = ("raise", "empty", "shape", "dtype")
OFFSET = "off"  # the column where the transform records the offset it added to "x"
ENTRY_BYTES = {False: 40, True: 24}  # what a good entry weighs (row values / batched=True columns)
HEAVIEST_ENTRY = 100  # at most what any entry weighs ("dtype": 3 str of up to 7 characters)


# ---------------------------------------------------------------------------- values
def code(uid: Any) -> int:
    """The integer every value of ``uid`` is made of (a str UID ``"u<k>"`` gives ``k``)."""
    if isinstance(uid, str):
        return int(uid[1:])
    return int(uid) % 1_000_003


class RowLoader:
    """``function_to_run`` of the model: a value made of the UID, or the UID's drawn failure."""

    def __init__(self, failures: dict[Any, str]) -> None:
        self.failures = failures

    def __call__(self, row: dict[str, Any]) -> Any:
        uid = row["uid"]
        k = code(uid)
        kind = self.failures.get(uid)
        if kind == "raise":
            raise ValueError(f"injected failure of UID {uid!r}")
        if kind == "empty":
            return []
        if kind == "shape":
            return {"x": np.full(WIDTH + 1, k, dtype=np.float64), "label": k}
        if kind == "dtype":
            return {"x": np.array([str(k)] * WIDTH), "label": k}
        return {"x": np.full(WIDTH, k, dtype=np.float64), "label": k}


class ChunkLoader:
    """``function_to_run`` with ``batched=True``: one produced row per UID, none for "empty" UIDs."""

    def __init__(self, failures: dict[Any, str]) -> None:
        self.failures = failures

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        uids = chunk["uid"].tolist()
        if any(self.failures.get(u) == "raise" for u in uids):
            raise ValueError(f"injected failure in a chunk of UIDs {uids!r}")
        kept = [u for u in uids if self.failures.get(u) != "empty"]
        codes = [code(u) for u in kept]
        return pd.DataFrame(
            {
                "uid": chunk["uid"].iloc[[uids.index(u) for u in kept]].to_numpy(),
                "x": np.asarray(codes, dtype=np.float64),
                "label": np.asarray(codes, dtype=np.int64),
            }
        )


def shift_sample(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``transform``: ``x`` plus a drawn offset, recorded in :data:`OFFSET` (0 for str values).

    It hands the UID back as an equal value of another type (a Python scalar for a numpy
    one), which the reservoir must serve as the source's UID all the same.
    """
    x = np.asarray(sample["x"])
    offset = int(rng.integers(1, 1000)) if x.dtype.kind in "fiu" else 0
    if offset:
        sample["x"] = sample["x"] + offset
    sample[OFFSET] = offset
    uid = sample["uid"]
    sample["uid"] = uid.item() if isinstance(uid, np.generic) else uid
    return sample


def shift_batch(batch: Any, rng: np.random.Generator) -> Any:
    """``transform`` with ``transform_batched=True``: :func:`shift_sample` for a whole batch."""
    assert isinstance(batch, dict), f"transform_batched got a {type(batch).__name__}"
    x = np.asarray(batch["x"])
    size = len(batch["uid"])
    if x.dtype.kind in "fiu":
        offsets = rng.integers(1, 1000, size=size)
        batch["x"] = x + offsets.reshape((size,) + (1,) * (x.ndim - 1))
    else:
        offsets = np.zeros(size, dtype=np.int64)
    batch[OFFSET] = offsets
    batch["uid"] = np.array(batch["uid"], copy=True)
    return batch


# ---------------------------------------------------------------------------- calls under a deadline
def _stacks() -> str:
    frames = sys._current_frames()
    return "\n".join(
        f"--- {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
        for t in threading.enumerate()
        if t.ident in frames
    )


def call(what: str, fn: Callable[[], Any], seconds: float = CALL_SECONDS) -> Any:
    """``fn()`` in a helper thread; a call that outlives ``seconds`` is a stall (test failure)."""
    done: Future[Any] = Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to the test thread
            done.set_exception(exc)

    thread = threading.Thread(target=run, name=f"model-call-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"stall: {what} did not return within {seconds:g} s\n{_stacks()}")
    return done.result()


class Boom(Exception):
    """Raised by the consumer inside an epoch."""


# ---------------------------------------------------------------------------- the model
@dataclass
class Held:
    """An iterator the consumer keeps, and the epochs started since it was last advanced."""

    it: Iterator[Any]
    behind: int = 0
    expired: bool = False
    waited: bool = False  # wait_loaded() ran since it was taken: it may expire it for room


@dataclass
class Model:
    """What may be served: UIDs, their failures, and which can be stored."""

    uids: list[Any]
    failures: dict[Any, str]
    weights: np.ndarray
    uid_dtype: np.dtype[Any]
    required: int
    capacity: int
    odd_possible: bool
    """Some UIDs give a value of another shape or dtype: with ``batch_size > 1`` the store refuses
    the rows that differ from the first one stored, so which UIDs can be stored depends on which
    arrives first, and the model cannot say whether the minimum is reachable."""
    held: list[Held] = field(default_factory=list)
    closed: bool = False

    def drawable(self, source_weighted: bool) -> list[Any]:
        if not source_weighted:
            return list(self.uids)
        return [u for u, w in zip(self.uids, self.weights, strict=True) if w > 0]

    def storable(self, source_weighted: bool) -> tuple[int, int]:
        """Fewest and most UIDs that can end up in the store."""
        drawable = self.drawable(source_weighted)
        hard = [u for u in drawable if self.failures.get(u) in ("raise", "empty")]
        odd = [u for u in drawable if self.failures.get(u) in ("shape", "dtype")]
        return len(drawable) - len(hard) - len(odd), len(drawable) - len(hard)


def check_uid_array(model: Model, uids: Any, where: str) -> list[Any]:
    """Served UIDs: the source's dtype, each one a UID of the source."""
    array = np.asarray(uids)
    if model.uid_dtype.kind in "iu":
        assert array.dtype == model.uid_dtype, (
            f"{where}: UIDs served as {array.dtype}, source has {model.uid_dtype}"
        )
    values = array.tolist()
    known = set(model.uids)
    strangers = [u for u in values if u not in known]
    assert not strangers, f"{where}: served UIDs not in the source: {strangers[:5]!r}"
    return values


def check_values(
    model: Model, uids: list[Any], xs: Any, labels: Any, where: str, offsets: Any = None
) -> None:
    """Each row's values are its UID's; ``offsets``: what the transform added to each ``x``."""
    for i, uid in enumerate(uids):
        k = code(uid)
        x = np.asarray(xs[i])
        if offsets is not None:
            offset = np.asarray(offsets[i]).tolist()
            if x.dtype.kind in "US":
                assert offset == 0, f"{where}: UID {uid!r}: an offset {offset!r} on str values"
            else:
                assert isinstance(offset, int) and 1 <= offset < 1000, (
                    f"{where}: UID {uid!r} served with offset {offsets[i]!r}: not transformed at this serve"
                )
                x = x - offset
        assert np.asarray(labels[i]).tolist() == k, (
            f"{where}: UID {uid!r} served label {labels[i]!r}, not {k}"
        )
        if x.dtype.kind in "US":
            assert model.failures.get(uid) == "dtype", f"{where}: UID {uid!r} served str values {x!r}"
            assert x.tolist() == [str(k)] * WIDTH, f"{where}: UID {uid!r} served {x!r}"
        else:
            assert np.all(x == k), f"{where}: UID {uid!r} served x={x!r}, not all {k}"


def check_batch(
    model: Model, batch: Any, where: str, *, batched: bool, transformed: bool = False
) -> list[Any]:
    """A served batch: every row matches its UID once the transform's offset is taken off."""
    columns = list(batch.columns) if isinstance(batch, pd.DataFrame) else list(batch)
    assert (OFFSET in columns) == transformed, (
        f"{where}: columns {columns!r} with transform={'set' if transformed else 'None'}"
    )
    offsets = batch[OFFSET] if transformed else None
    if isinstance(batch, pd.DataFrame):
        uids = check_uid_array(model, batch["uid"].to_numpy(), where)
        xs, labels = list(batch["x"]), list(batch["label"])
        offsets = None if offsets is None else offsets.tolist()
    else:
        assert isinstance(batch, dict), f"{where}: a batch is {type(batch).__name__}"
        uids = check_uid_array(model, batch["uid"], where)
        xs, labels = batch["x"], batch["label"]
    if batched:
        xs = [np.full(WIDTH, x) for x in np.asarray(xs).tolist()]
    check_values(model, uids, xs, labels, where, offsets)
    bad = [u for u in uids if model.failures.get(u) in ("raise", "empty")]
    assert not bad, f"{where}: served UIDs whose job never gives a value: {bad!r}"
    return uids


# ---------------------------------------------------------------------------- the machine
class ReservoirMachine(RuleBasedStateMachine):
    """Operations users do on one reservoir (and the ones restored from it)."""

    client: Client

    def __init__(self) -> None:
        super().__init__()
        self.reservoir: AsyncReservoir | None = None
        self.model: Model | None = None
        self.kwargs: dict[str, Any] = {}
        self.source: pd.DataFrame | None = None
        self.loader: Any = None
        self.expect_job_error: bool | None = None  # None: either outcome fits the model
        # what the model said at construction: preconditions read only this (not what a run
        # found out), so that the rules drawn depend on the drawn data alone, never on timing
        self.expected_at_build: bool | None = None
        self.epochs_run = 0
        self.cache_dir: str | None = None  # a fresh directory per example, removed at teardown
        self.rank_uids: set[Any] = set()  # with passes: what this rank's shards of those passes hold
        self.rank_rows = 0  # with passes: rows of this rank's shards over all passes
        self.passes_known = False  # the source sampler visits every row of a shard once per pass
        self.restored = False
        self.released = False  # release_quarantine gave some UID back (submitted again)
        self.submitted_when_done: int | None = None  # rows_submitted once wait_loaded() ended

    # ------------------------------------------------------------------ construction
    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        draw = data.draw
        n = draw(st.integers(6, 24), label="rows")
        kind = draw(st.sampled_from(["int64", "uint64", "str"]), label="uid kind")
        if kind == "int64":
            uids: list[Any] = draw(
                st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n, unique=True)
            )
            column = pd.Series(uids, dtype=np.int64)
        elif kind == "uint64":
            small = draw(st.integers(0, n), label="small uint64 UIDs")
            uids = [2**63 + i for i in range(n - small)] + [5 + i for i in range(small)]
            column = pd.Series(np.asarray(uids, dtype=np.uint64))
        else:
            uids = [f"u{i * 7 + 1}" for i in range(n)]
            column = pd.Series(uids)
        weights = np.asarray(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=n, max_size=n)))
        if not weights.any():
            weights[0] = 1.0
        classes = np.asarray(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
        # "w" (some zero) weighs the source sampler's draws; "rw" (all positive) the reservoir
        # sampler's, since an epoch whose members all weigh 0 is refused (documented)
        self.source = pd.DataFrame({"uid": column, "w": weights, "rw": weights + 0.25, "cls": classes})

        batched = draw(st.booleans(), label="batched")
        kinds = ("raise", "empty") if batched else FAILURE_KINDS
        failing = draw(st.lists(st.sampled_from(uids), max_size=max(1, n // 3), unique=True), label="failing")
        failures = {u: draw(st.sampled_from(kinds)) for u in failing}
        capacity = draw(st.integers(2, n + 4), label="capacity")
        minimum = draw(st.integers(1, capacity), label="minimum")
        deterministic = draw(st.booleans(), label="deterministic")
        replacement = (
            draw(st.integers(1, capacity))
            if deterministic
            else draw(st.one_of(st.none(), st.integers(1, capacity)), label="replacement")
        )
        world_size = draw(st.sampled_from([1, 1, 2, 3]), label="world_size")
        rank = draw(st.integers(0, world_size - 1), label="rank")

        def sampler(label: str, weights: str) -> Any:
            choice = draw(
                st.sampled_from(["none", "sequential", "random", "random-unseeded", "weighted", "balanced"]),
                label=label,
            )
            seed = draw(st.integers(0, 3))
            return {
                "none": None,
                "sequential": SequentialSampler(),
                "random": RandomSampler(seed=seed),
                "random-unseeded": RandomSampler(),
                "weighted": WeightedSampler(weights, seed=seed),
                "balanced": BalancedSampler("cls", seed=seed),
            }[choice]

        source_sampler = sampler("source sampler", "w")
        reservoir_sampler = sampler("reservoir sampler", "rw")
        if batched and any(v == "raise" for v in failures.values()):
            rows_per_job: Any = 1  # a raising chunk fails all its UIDs: keep one UID per chunk
        else:
            rows_per_job = draw(st.sampled_from(["auto", 1, 3]), label="rows_per_job")
        self.kwargs = dict(
            min_reservoir_samples=minimum,
            client=self.client,
            uid_column="uid",
            batch_size=draw(st.integers(1, 5), label="batch_size"),
            drop_last=draw(st.booleans(), label="drop_last"),
            max_reservoir_replacement_size=replacement,
            maximum_number_of_samples_per_epoch=draw(st.one_of(st.none(), st.integers(1, 2 * n))),
            deterministic=deterministic,
            source_sampler=source_sampler,
            reservoir_sampler=reservoir_sampler,
            rank=rank,
            world_size=world_size,
            batched=batched,
            batch_format=draw(st.sampled_from(["numpy", "pandas"]), label="batch_format"),
            rows_per_job=rows_per_job,
            prefetch_batches=draw(st.sampled_from([0, 2]), label="prefetch_batches"),
            # a bound in tasks, smaller than rows_per_job too (it never shrinks tasks)
            max_jobs_at_once=draw(st.sampled_from([None, 1, 2, 16]), label="max_jobs_at_once"),
            max_stale_epochs=draw(st.sampled_from([0, 1, 2]), label="max_stale_epochs"),
            max_failures_per_uid=2,
            passes=draw(st.sampled_from([None, None, 1, 2]), label="passes"),
            # etiquette and the code upload: no served row may change with them
            priority=draw(st.sampled_from([0, -5, 3]), label="priority"),
            annotations=draw(st.sampled_from([None, {"team": "model"}]), label="annotations"),
            upload_code=draw(st.booleans(), label="upload_code"),
        )
        transform = draw(st.sampled_from([None, "sample", "batch"]), label="transform")
        if transform is not None:
            self.kwargs["transform"] = shift_batch if transform == "batch" else shift_sample
            self.kwargs["transform_batched"] = transform == "batch"
            self.kwargs["transform_seed"] = draw(st.sampled_from([None, 0, 7]), label="transform_seed")
        if not batched and draw(st.booleans(), label="cache"):
            self.cache_dir = tempfile.mkdtemp(prefix="dask_reservoir-model-cache-")
            self.kwargs["cache"] = self.cache_dir
        bounded = draw(st.booleans(), label="max_reservoir_bytes")
        self.loader = ChunkLoader(failures) if batched else RowLoader(failures)
        weighted_source = isinstance(source_sampler, WeightedSampler)
        self.model = Model(
            uids=uids,
            failures=failures,
            weights=weights,
            uid_dtype=column.to_numpy().dtype,
            required=0,
            capacity=capacity,
            odd_possible=any(v in ("shape", "dtype") for v in failures.values()),
        )
        self.weighted_source = weighted_source
        required = min(minimum, n)
        if world_size > 1:  # every rank's epoch serves R entries
            per_epoch = self.kwargs["maximum_number_of_samples_per_epoch"] or minimum
            required = max(required, min(per_epoch, n, capacity))
        self.model.required = required
        if bounded:  # holds a few entries, and at least the minimum whatever eviction leaves
            weight = HEAVIEST_ENTRY if self.model.odd_possible else ENTRY_BYTES[batched]
            bound = (max(required, 2) + 1) * weight + draw(st.integers(0, weight - 1), label="byte slack")
            self.kwargs["max_reservoir_bytes"] = draw(st.sampled_from([bound, f"{bound}B"]))
            self.max_bytes: int | None = bound
        else:
            self.max_bytes = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. drop_last with a batch larger than an epoch
            try:
                self.reservoir = call("AsyncReservoir()", self._new_reservoir)
            except ValueError as exc:
                # refused at construction: only for a minimum the source sampler cannot reach
                assert weighted_source and len(self.model.drawable(True)) < required, (
                    f"construction refused: {exc}"
                )
                event("construction refused: minimum out of the source sampler's reach")
                self.model.closed = True
                return
        assert not (weighted_source and len(self.model.drawable(True)) < required), (
            "a minimum the source sampler cannot reach was not refused at construction"
        )
        lowest, highest = self.model.storable(weighted_source)
        passes = self.kwargs["passes"]
        if passes is not None:
            self._expect_with_passes(passes, source_sampler)
        elif lowest >= required and not self.model.odd_possible:
            self.expect_job_error = False
        elif highest < required:
            self.expect_job_error = True
        else:
            self.expect_job_error = None
        self.expected_at_build = self.expect_job_error

    def _expect_with_passes(self, passes: int, source_sampler: Any) -> None:
        """``passes=``: this rank loads only its shards of those passes, then serves what it has.

        A sequential or random source sampler visits each row of a shard once per pass, so
        the rows loaded are exactly the shards' rows; a weighted or balanced one draws some
        rows again and others never, so the shards (their drawable rows) only bound them.
        Below the minimum, ``iter()`` waits until loading ended, then serves what is loaded:
        JobError only when nothing can be stored.
        """
        model = self.model
        assert model is not None
        shards = [self.r.shard_uids(k) for k in range(passes)]
        self.rank_rows = sum(len(shard) for shard in shards)
        self.rank_uids = {u.item() if isinstance(u, np.generic) else u for shard in shards for u in shard}
        self.passes_known = source_sampler is None or isinstance(
            source_sampler, (SequentialSampler, RandomSampler)
        )
        if self.weighted_source:
            self.rank_uids &= set(model.drawable(True))
        good = [u for u in self.rank_uids if u not in model.failures]
        storable = [u for u in self.rank_uids if model.failures.get(u) not in ("raise", "empty")]
        if not storable:
            self.expect_job_error = True  # nothing is ever stored: the minimum's wait or its end raises
        elif self.passes_known and len(good) >= model.required and not model.odd_possible:
            self.expect_job_error = False
        else:
            self.expect_job_error = None

    def _new_reservoir(self) -> AsyncReservoir:
        return AsyncReservoir(self.source, self.loader, self.model.capacity, **self.kwargs)  # type: ignore[union-attr]

    def _check(self, batch: Any, where: str) -> list[Any]:
        """:func:`check_batch` with this reservoir's options."""
        return check_batch(
            self.model,  # type: ignore[arg-type]
            batch,
            where,
            batched=self.kwargs["batched"],
            transformed=self.kwargs.get("transform") is not None,
        )

    @property
    def r(self) -> AsyncReservoir:
        assert self.reservoir is not None
        return self.reservoir

    def _epoch_started(self) -> None:
        for held in self.model.held:  # type: ignore[union-attr]
            held.behind += 1

    def open(self) -> bool:
        return self.model is not None and not self.model.closed

    # ------------------------------------------------------------------ epochs
    def _epoch(self, what: str, *, stop_after: int | None = None) -> list[Any]:
        """Run one epoch (or ``stop_after`` batches of it), checking every row; the UIDs served."""
        model = self.model
        assert model is not None
        batch_size = self.kwargs["batch_size"]

        def run() -> list[Any]:
            served: list[Any] = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                it = iter(self.r)
            self._epoch_started()
            expected_batches = len(it)
            batches = 0
            for batch in it:
                uids = self._check(batch, what)
                assert 1 <= len(uids) <= batch_size, (
                    f"{what}: a batch of {len(uids)} rows (batch_size={batch_size})"
                )
                if self.kwargs["drop_last"]:
                    assert len(uids) == batch_size, f"{what}: a short batch of {len(uids)} with drop_last"
                served.extend(uids)
                batches += 1
                if stop_after is not None and batches >= stop_after:
                    return served
            assert batches == expected_batches, (
                f"{what}: {batches} batches, len(iter()) said {expected_batches}"
            )
            cap = self.kwargs["maximum_number_of_samples_per_epoch"]
            if self.kwargs["world_size"] > 1:
                assert len(served) <= model.required, (
                    f"{what}: {len(served)} rows, rank epochs serve {model.required}"
                )
            elif cap is not None:
                assert len(served) <= cap, (
                    f"{what}: {len(served)} rows, maximum_number_of_samples_per_epoch={cap}"
                )
            return served

        try:
            served = call(what, run)
        except JobError as exc:
            assert self.expect_job_error is not False, (
                f"{what}: JobError although the minimum is reachable: {exc}"
            )
            self.expect_job_error = True
            event("iter() raised JobError")
            return []
        assert self.expect_job_error is not True, f"{what}: no JobError although the minimum is out of reach"
        self.expect_job_error = False
        self.epochs_run += 1
        return served

    @precondition(lambda self: self.open())
    @rule()
    def epoch(self) -> None:
        self._epoch("epoch")

    @precondition(lambda self: self.open())
    @rule(batches=st.integers(1, 3))
    def raise_inside_epoch(self, batches: int) -> None:
        """The consumer raises in the middle of an epoch (and drops the iterator)."""

        def run() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                it = iter(self.r)
            self._epoch_started()
            for i, batch in enumerate(it):
                self._check(batch, "raise_inside_epoch")
                if i + 1 >= batches:
                    raise Boom

        try:
            call("raise inside an epoch", run)
        except Boom:
            pass
        except JobError:
            assert self.expect_job_error is not False, "JobError although the minimum is reachable"
            self.expect_job_error = True

    @precondition(lambda self: self.open() and len(self.model.held) < 4)  # type: ignore[union-attr]
    @rule(advance=st.booleans())
    def hold_iterator(self, advance: bool) -> None:
        """Start an epoch and keep its iterator (a validation loop's reference, say)."""
        model = self.model
        assert model is not None

        def run() -> Iterator[Any]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                it = iter(self.r)
            self._epoch_started()
            if advance:
                batch = next(it, None)
                if batch is not None:
                    self._check(batch, "held iterator")
            return it

        try:
            model.held.append(Held(call("hold an iterator", run)))
        except JobError:
            assert self.expect_job_error is not False, "JobError although the minimum is reachable"
            self.expect_job_error = True
            # held all the same (an ended one): the rules drawn next must not depend on timing
            model.held.append(Held(iter(())))

    @precondition(lambda self: self.open() and bool(self.model.held))  # type: ignore[union-attr]
    @rule(data=st.data())
    def advance_held(self, data: st.DataObject) -> None:
        """``next()`` on a held iterator: a batch of its own epoch, its end, or a clear expiry."""
        model = self.model
        assert model is not None
        held = model.held[data.draw(st.integers(0, len(model.held) - 1))]

        def run() -> None:
            batch = next(held.it, None)
            if batch is not None:
                self._check(batch, "advance a held iterator")

        try:
            call("next() on a held iterator", run)
        except IteratorExpiredError as exc:  # left behind by too many newer epochs
            stale = self.kwargs["max_stale_epochs"]
            assert held.expired or held.behind > stale or self.kwargs["deterministic"] or held.waited, (
                f"an iterator {held.behind} epochs behind expired with max_stale_epochs={stale}: {exc}"
            )
            assert (exc.behind >= 1 or held.waited) and "max_stale_epochs" in str(exc), str(exc)
            held.expired = True
            event("a held iterator expired")
        else:
            assert not held.expired, "an expired iterator served a batch again"
        held.behind = 0

    @precondition(lambda self: self.open() and bool(self.model.held))  # type: ignore[union-attr]
    @rule(data=st.data())
    def drop_held(self, data: st.DataObject) -> None:
        model = self.model
        assert model is not None
        del model.held[data.draw(st.integers(0, len(model.held) - 1))]
        gc.collect()

    @precondition(lambda self: self.open())
    @rule(epoch=st.integers(0, 50))
    def set_epoch(self, epoch: int) -> None:
        call("set_epoch", lambda: self.r.set_epoch(epoch))

    # ------------------------------------------------------------------ refresh
    @precondition(
        lambda self: self.open() and self.expected_at_build is not True and self.kwargs["passes"] is None
    )
    @rule(hold=st.booleans())
    def refresh_goes_on(self, hold: bool) -> None:
        """Whatever the consumer holds, later epochs go on ingesting fresh entries.

        More entries than the store and its spare slots hold (``capacity + ceil(capacity / 2)``):
        iterators that pinned their entries for good would stop the refresh before that.  With
        ``hold``, it first keeps one more iterator, advanced once (at most 4 held).
        """
        if hold and len(self.model.held) < 4:  # type: ignore[union-attr]
            self.hold_iterator(advance=True)
        if self.expect_job_error is not False:  # not known yet to be reachable: nothing to check
            return
        capacity = self.model.capacity  # type: ignore[union-attr]
        target = capacity + -(-capacity // 2) + 1
        before = self.r.stats().entries_ingested
        for i in range(3 * target):
            self._epoch(f"refresh epoch {i}")
            if self.r.stats().entries_ingested - before >= target:
                event(f"refresh went on with {len(self.model.held)} iterators held")  # type: ignore[union-attr]
                return
            call(
                "wait for a result",
                lambda: poll_for(
                    lambda: self.r.stats().entries_waiting > 0, timeout=10, what="a finished job"
                ),
            )
        s = self.r.stats()
        raise AssertionError(
            f"{s.entries_ingested - before} of {target} entries ingested in {3 * target} epochs while "
            f"{len(self.model.held)} iterators are held: {s.summary()} "  # type: ignore[union-attr]
            f"(live_iterators={s.live_iterators}, entries_pinned={s.entries_pinned})"
        )

    # ------------------------------------------------------------------ analysis
    @precondition(lambda self: self.open())
    @rule()
    def to_pandas(self) -> None:
        model = self.model
        assert model is not None
        frame = call("to_pandas", self.r.to_pandas)
        assert OFFSET not in frame.columns, f"to_pandas shows the transform's column: {list(frame.columns)!r}"
        uids = check_uid_array(model, frame["uid"].to_numpy(), "to_pandas")
        xs = list(frame["x"]) if len(frame) else []
        if self.kwargs["batched"]:
            xs = [np.full(WIDTH, x) for x in xs]
        check_values(model, uids, xs, list(frame["label"]) if len(frame) else [], "to_pandas")

    @precondition(lambda self: self.open())
    @rule(data=st.data())
    def subsample_uids(self, data: st.DataObject) -> None:
        model = self.model
        assert model is not None
        chosen = data.draw(st.lists(st.sampled_from(model.uids), min_size=1, max_size=6, unique=True))

        def run() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a "shape" UID's value changes a column's shape
                child = self.r.subsample_uids(chosen)
            try:
                frame = child.to_pandas()
                served = check_uid_array(model, frame["uid"].to_numpy(), "subsample_uids to_pandas")
                assert set(served) <= set(chosen), (
                    f"a subset served UIDs it does not have: {set(served) - set(chosen)!r}"
                )
            finally:
                child.close()

        weights = dict(zip(model.uids, model.weights, strict=True))
        try:
            call("subsample_uids", run)
        except ValueError as exc:  # a subset of rows the weighted source sampler never draws
            assert self.weighted_source and not any(weights[u] for u in chosen), (
                f"subsample_uids refused: {exc}"
            )
            assert str(exc).startswith("source_sampler=WeightedSampler"), str(exc)

    @precondition(lambda self: self.open())
    @rule()
    def release_quarantine(self) -> None:
        model = self.model
        assert model is not None
        released = call("release_quarantine", self.r.release_quarantine)
        if released:  # submitted again: rows_submitted grows past the passes
            self.released = True
            self.submitted_when_done = None
        bad = [u for u in released if u not in model.failures]
        if model.odd_possible:  # a row of another shape or kind stored first makes the others refused
            return
        assert not bad, f"UIDs quarantined whose job never fails: {bad!r}"

    # ------------------------------------------------------------------ resume
    @precondition(lambda self: self.open() and not self.model.held)  # type: ignore[union-attr]
    @rule()
    def checkpoint_and_restore(self) -> None:
        """``state_dict()`` (as JSON) then a new reservoir going on from it."""
        held_entries = self.r.stats().reservoir_size
        state = json.loads(json.dumps(call("state_dict", self.r.state_dict)))
        call("close", self.r.close)

        def restore() -> AsyncReservoir:
            fresh = self._new_reservoir()
            try:
                fresh.load_state_dict(state)
            except BaseException:
                fresh.close()
                raise
            return fresh

        self.reservoir = call("restore", restore)
        self.restored = True
        self.submitted_when_done = None  # the new reservoir counts its own rows (its former members first)
        if self.cache_dir is not None and held_entries:
            # its former members load first, and each was computed (so kept) by an earlier reservoir
            call(
                "cache hits after a restore",
                lambda: poll_for(
                    lambda: self.r.stats().cache_hits > 0,
                    timeout=20,
                    what=f"a cache hit among the {held_entries} former members loaded again",
                ),
            )
            event("a restored reservoir read its former members from the cache")

    # ------------------------------------------------------------------ passes
    # with iterators held and epochs prepared ahead too: wait_loaded() drops the prepared epoch and
    # expires held iterators, oldest first, when their pinned entries leave results waiting for room
    @precondition(lambda self: self.open() and self.kwargs["passes"] is not None)
    @rule()
    def wait_loaded(self) -> None:
        """``wait_loaded()`` ends with every pass loaded and ingested; nothing is submitted after."""
        model = self.model
        assert model is not None
        for held in model.held:
            held.waited = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            done = call("wait_loaded", lambda: self.r.wait_loaded(timeout=CALL_SECONDS / 2))
        s = self.r.stats()
        assert done.loading_done and s.loading_done, f"wait_loaded() returned before loading ended: {s}"
        assert s.rows_in_flight == 0 and s.jobs_in_flight == 0 and s.entries_waiting == 0, s
        if self.submitted_when_done is not None:
            assert s.rows_submitted == self.submitted_when_done, (
                f"rows submitted {self.submitted_when_done} when loading ended, {s.rows_submitted} now"
            )
        self.submitted_when_done = s.rows_submitted
        if self.passes_known and not self.restored and not self.released:
            assert s.rows_submitted == self.rank_rows, (
                f"{s.rows_submitted} rows submitted over passes={self.kwargs['passes']}, "
                f"this rank's shards hold {self.rank_rows}"
            )
        if self.cache_dir is not None:
            # every row loaded was read from the cache or computed; a row the store refused after
            # that (rows_failed) was counted too, a row whose function raised was not
            assert s.rows_loaded <= s.cache_hits + s.cache_misses <= s.rows_loaded + s.rows_failed, (
                f"cache hits {s.cache_hits} + misses {s.cache_misses}, rows loaded {s.rows_loaded}, "
                f"failed {s.rows_failed}"
            )
        frame = call("to_pandas after wait_loaded", self.r.to_pandas)
        stored = set(check_uid_array(model, frame["uid"].to_numpy(), "to_pandas after wait_loaded"))
        strangers = stored - self.rank_uids
        assert not strangers, f"entries of UIDs outside this rank's shards: {sorted(map(str, strangers))[:5]}"
        wanted = {u for u in self.rank_uids if u not in model.failures}
        loadable = [u for u in self.rank_uids if model.failures.get(u) not in ("raise", "empty")]
        fits = len(loadable) <= model.capacity and (
            self.max_bytes is None or len(loadable) * ENTRY_BYTES[self.kwargs["batched"]] <= self.max_bytes
        )
        if self.passes_known and fits and not model.odd_possible:
            assert stored == wanted, (
                f"after wait_loaded(): missing {sorted(map(str, wanted - stored))[:5]}, "
                f"unexpected {sorted(map(str, stored - wanted))[:5]} ({len(stored)} stored, {len(wanted)} storable)"
            )
            event("wait_loaded: every storable row of this rank's passes is stored")

    # ------------------------------------------------------------------ close
    @precondition(lambda self: self.open())
    @rule()
    def close(self) -> None:
        model = self.model
        assert model is not None
        call("close", self.r.close)
        call("close again", self.r.close)
        model.closed = True
        model.held.clear()
        with pytest.raises(ReservoirClosedError):
            iter(self.r)

    @precondition(lambda self: self.model is not None and self.model.closed)
    @rule()
    def use_after_close(self) -> None:
        """A closed reservoir (or one refused at construction) says so, and closes again quietly."""
        if self.reservoir is None:
            return
        with pytest.raises(ReservoirClosedError):
            iter(self.r)
        call("close once more", self.r.close)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def counters_balance(self) -> None:
        if self.reservoir is None or not self.open():
            return
        s = self.r.stats()
        accounted = s.rows_loaded + s.rows_failed + s.rows_in_flight + s.rows_requeued + s.rows_cancelled
        assert s.rows_submitted == accounted, (
            f"rows submitted {s.rows_submitted} != loaded {s.rows_loaded} + failed {s.rows_failed} + "
            f"in flight {s.rows_in_flight} + requeued {s.rows_requeued} + cancelled {s.rows_cancelled}"
        )
        assert 0 <= s.reservoir_size <= self.model.capacity  # type: ignore[union-attr]
        assert s.entries_waiting >= 0 and s.rows_in_flight >= 0
        assert 0 <= s.epochs_prepared <= s.epochs and s.loading_held_seconds >= 0
        if self.kwargs["max_jobs_at_once"] is not None:  # a bound in tasks
            assert s.jobs_in_flight <= self.kwargs["max_jobs_at_once"], s
        if self.kwargs["deterministic"] or not self.kwargs["prefetch_batches"]:
            assert s.epochs_prepared == 0  # epochs start in iter(): exact ingestion, or no builder
        if self.max_bytes is not None:
            assert s.max_reservoir_bytes == self.max_bytes, s
            assert 0 <= s.reservoir_bytes <= self.max_bytes, (
                f"reservoir_bytes={s.reservoir_bytes} > max_reservoir_bytes={self.max_bytes}"
            )
        if self.cache_dir is not None:  # counted per row of a task that came back (apart from rows_loaded)
            assert s.cache_hits + s.cache_misses <= s.rows_submitted, (
                f"cache hits {s.cache_hits} + misses {s.cache_misses} > rows submitted {s.rows_submitted}"
            )
        else:
            assert s.cache_hits == s.cache_misses == 0, s
        if self.submitted_when_done is not None:  # passes: nothing is submitted after loading ended
            assert s.loading_done and s.rows_submitted == self.submitted_when_done, (
                f"rows submitted {self.submitted_when_done} when loading ended, now {s.rows_submitted} "
                f"(loading_done={s.loading_done})"
            )

    @invariant()
    def nothing_pinned_without_iterators(self) -> None:
        if self.reservoir is None or not self.open() or self.model.held:  # type: ignore[union-attr]
            return
        gc.collect()
        poll_for(
            lambda: self.r.stats().live_iterators == 0 and self.r.stats().entries_pinned == 0,
            timeout=10,
            what="no live iterator and nothing pinned once every iterator is gone",
        )

    def teardown(self) -> None:
        if self.model is not None:
            self.model.held.clear()
        if self.reservoir is not None:
            call("close at teardown", self.reservoir.close)
        gc.collect()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)


def _settings() -> settings:
    options: dict[str, Any] = {
        "max_examples": EXAMPLES,
        "stateful_step_count": STEPS,
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        "database": None,
        "print_blob": True,
        "derandomize": not os.environ.get("DASK_RESERVOIR_MODEL_RANDOM"),
    }
    if not os.environ.get("DASK_RESERVOIR_MODEL_SHRINK"):  # shrinking over a cluster takes many minutes
        options["phases"] = (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(**options)


@pytest.fixture(scope="module", autouse=True)
def model_client() -> Iterator[Client]:
    """The machine's cluster; once every example ran, none of its futures or tasks may remain."""
    with threaded_cluster(2) as client:
        ReservoirMachine.client = client
        yield client
        poll_for(lambda: len(client.futures) == 0, timeout=15, what="client futures to be released")
        poll_for(lambda: scheduler_task_count(client) == 0, timeout=15, what="scheduler tasks to be released")


TestReservoirStateMachine = ReservoirMachine.TestCase
"""Drawn options, failures and operations: every row served matches its UID, nothing stalls."""
TestReservoirStateMachine.settings = _settings()
