"""Epochs: a snapshot of the store, ordered by the reservoir sampler, served by an iterator.

:class:`Epochs` numbers the epochs (``set_epoch``), turns a snapshot into a
:class:`~dask_reservoir._runtime.batches.BatchIterator`, keeps the iterators whose epoch may
not be over (to expire those left more than ``max_stale_epochs`` behind) and prepares the next
epoch's order on the batch builder's thread.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from dask_reservoir._core.augment import ServeTransform
from dask_reservoir._core.deprecations import user_stacklevel
from dask_reservoir._core.formats import converter
from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.order import epoch_order
from dask_reservoir._core.samplers import RandomSampler, Sampler
from dask_reservoir._core.served import ServedCounters
from dask_reservoir._core.store import Snapshot
from dask_reservoir._runtime.ahead import EpochAhead, Prepared
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.prefetch import BatchBuilder

__all__ = ["Epochs"]

logger = logging.getLogger("dask_reservoir")


class Epochs:
    """The epochs of one reservoir: numbers, iterators, orders.

    Parameters
    ----------
    options : ReservoirOptions
        Batch size, ``drop_last``, ``collate_fn``, ranks, ``prefetch_batches``, ``max_stale_epochs``.
    sampler : Sampler
        The reservoir sampler, bound to the source.
    served : ServedCounters
        Where each ``next()`` is counted.
    check : callable
        Raises what the consumer must see now; runs before every batch.
    rank_epoch_rows : callable
        With ranks: the entries every rank's epoch serves.
    dtypes : dict
        The pandas dtypes of produced columns (read at each ``batch_format="pandas"`` batch).
    name : str
        Names the batch builder's thread.
    take_snapshot : callable, optional
        Ingests and returns ``(snapshot, epoch number)`` for the next epoch, or None when it cannot
        be prepared now; called in the builder's thread when the newest epoch has served its
        last batch (see :mod:`~dask_reservoir._runtime.ahead`).  None: epochs start in ``iter()``.
    """

    def __init__(
        self,
        *,
        options: ReservoirOptions,
        sampler: Sampler,
        served: ServedCounters,
        check: Callable[[], None],
        rank_epoch_rows: Callable[[], int],
        dtypes: dict[str, Any],
        name: str,
        take_snapshot: Callable[[], tuple[Snapshot, int] | None] | None = None,
    ) -> None:
        self.options = options
        self.sampler = sampler
        self.served = served
        self.check = check
        self.rank_epoch_rows = rank_epoch_rows
        self.dtypes = dtypes
        self.started = 0  # epochs started
        self.number = 0  # the next epoch's number for the samplers (set_epoch)
        self.builder = BatchBuilder(name=name, max_ahead=options.prefetch_batches)
        self._iterators: list[weakref.ref[BatchIterator]] = []  # epochs not known to be over, oldest first
        self._iterators_lock = threading.Lock()
        self._next_order: tuple[int, int, Future[np.ndarray]] | None = None
        # the pipeline's ingest-and-snapshot for an epoch prepared ahead (None: never prepare)
        self._take_snapshot: Callable[[], tuple[Snapshot, int] | None] | None = take_snapshot
        self.ahead = EpochAhead(self.builder, self._prepare)
        self.transform = serve_transform(options)

    def state_dict(self) -> dict[str, int]:
        """The epochs' keys of the reservoir's state: the next epoch's number and the epochs started."""
        return {"epoch": self.number, "epochs": self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on numbering from a state's ``epoch`` (the epochs this reservoir started stay counted)."""
        self.number = int(state["epoch"])

    def next_number(self) -> int:
        """Number the epoch starting now, and count it."""
        epoch = self.number
        self.number += 1
        self.started += 1
        return epoch

    def start(self, snapshot: Snapshot, epoch: int, *, owner: object = None) -> BatchIterator:
        """An iterator serving ``snapshot`` in the sampler's order for ``epoch``; it owns the snapshot.

        ``owner`` (the reservoir) lives as long as the iterator: ``for b in AsyncReservoir(...)``
        keeps it open.  Whatever raises here (a sampler, a warning turned into an error, a KeyboardInterrupt)
        releases the snapshot: it never outlives a failed ``iter()``.
        """
        it = self._iterator(snapshot, epoch, owner=owner)
        try:
            self._warn_no_batch(it.rows)
            self._register(it)
        except BaseException:
            it.close()
            raise
        return it

    def _iterator(self, snapshot: Snapshot, epoch: int, *, owner: object) -> BatchIterator:
        """The epoch's iterator, without warnings (``iter()`` gives them: see :meth:`checked`)."""
        options = self.options
        handed = False  # the iterator owns the snapshot from its construction on
        try:
            order = self._order(len(snapshot), epoch, snapshot.positions)
            max_samples = options.maximum_number_of_samples_per_epoch
            if options.world_size > 1 and len(order):  # the same number of entries on every rank
                order, max_samples = np.resize(order, self.rank_epoch_rows()), None
            handed = True
            return BatchIterator(
                snapshot,
                order,
                batch_size=options.batch_size,
                drop_last=options.drop_last,
                collate_fn=options.collate_fn,
                uid_column=options.uid_column,
                max_samples=max_samples,
                check=self.check,
                on_batch=self._count_batch,
                builder=self.builder,
                prefetch=options.prefetch_batches,
                convert=converter(options.batch_format, self.dtypes),
                epoch=epoch,
                owner=owner,
                on_end=self._on_end,
                transform=None if self.transform is None else self.transform.for_epoch(epoch),
            )
        except BaseException:
            if not handed:  # BatchIterator releases it when its construction fails
                snapshot.release()
            raise

    def _warn_no_batch(self, entries: int) -> None:
        """Warn, at the user's line, when ``drop_last`` drops the whole epoch of ``entries``."""
        options = self.options
        if options.drop_last and entries < options.batch_size:
            warnings.warn(
                f"batch_size={options.batch_size} is larger than the {entries} entries this "
                "epoch serves and drop_last=True: the epoch yields no batch",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _register(self, it: BatchIterator) -> None:
        with self._iterators_lock:
            self._iterators.append(weakref.ref(it))
        self._prepare_order(it.snapshot_size, self.number)

    # ------------------------------------------------------------------ epochs prepared ahead
    def _on_end(self, it: BatchIterator) -> None:
        """An epoch served its last batch: when it is the newest, prepare the next one."""
        if (
            self._take_snapshot is not None
            and self.options.prefetch_batches
            and not self.options.deterministic
            and it.epoch == self.number - 1
        ):
            self.ahead.start()

    def _prepare(self) -> Prepared | None:
        """In the builder's thread: the next epoch's snapshot (from the pipeline), order and first builds."""
        taken = self._take_snapshot() if self._take_snapshot is not None else None
        if taken is None:
            return None
        snapshot, epoch = taken
        at = time.monotonic()
        # no warning from this thread: warnings' filters are the process's, not this thread's
        # (the consumer's catch_warnings() would record, or lose, its warnings); see checked()
        it = self._iterator(snapshot, epoch, owner=None)
        return Prepared(it, epoch, at)

    def prepared(self) -> BatchIterator | None:
        """The next epoch's iterator when it was prepared ahead (not yet registered), else None."""
        return self.ahead.take(epoch=self.number)

    def adopt(self, it: BatchIterator, *, owner: object) -> BatchIterator | None:
        """Hand over the prepared ``it`` as the epoch starting now, or drop it (None) if another was asked for.

        Call with the pipeline's lock held, after :meth:`age`.
        """
        if it.epoch != self.number or it.ended:
            it.close()
            return None
        self.next_number()
        it.owner = owner
        self._register(it)
        return it

    def checked(self, it: BatchIterator) -> BatchIterator:
        """``it``, adopted, after the warnings ``iter()`` owes for it (built without, ahead).

        Call without the pipeline's lock, once the hand-over is accounted for: a warning
        turned into an error closes ``it`` (its entries are released) and propagates.
        """
        try:
            self._warn_no_batch(it.rows)
        except BaseException:
            it.close()
            raise
        return it

    def _count_batch(self, rows: int, seconds: float, carried: float) -> None:
        self.served.batch(rows=rows, seconds=seconds, carried=carried)

    # ------------------------------------------------------------------ live iterators
    def live(self) -> list[BatchIterator]:
        """The iterators whose epoch may not be over, oldest first (forgets the others)."""
        with self._iterators_lock:
            alive = [(ref, it) for ref in self._iterators if (it := ref()) is not None and not it.ended]
            self._iterators = [ref for ref, _ in alive]
        return [it for _, it in alive]

    def age(self) -> None:
        """A newer epoch starts: expire the iterators left behind by more than ``max_stale_epochs``.

        The others drop their batches built ahead (the budget goes to the newest epoch).
        """
        max_stale = self.options.max_stale_epochs
        expired = [it for it in self.live() if it.note_newer_epoch(max_stale)]
        if expired:
            logger.info(
                "dask_reservoir: expired %d iterators not advanced while more than %d newer epochs started "
                "(max_stale_epochs); their entries are released, their next() raises IteratorExpiredError",
                len(expired),
                max_stale,
            )

    def drop_prepared(self) -> bool:
        """Drop the epoch prepared ahead, releasing its snapshot; whether one was dropped."""
        if not self.ahead.holding:
            return False
        self.ahead.take(epoch=-1)  # no epoch is numbered -1: what is prepared is dropped
        return not self.ahead.holding

    def expire_for_room(self, *, by: str = "iter() with deterministic=True") -> bool:
        """Free room that pinned entries hold: drop the epoch prepared ahead, else expire the oldest iterator.

        ``by``: who needs the room (``deterministic=True``'s exact entries, or ``wait_loaded()``),
        for the expired iterator's error.  Returns whether something was dropped or expired (none
        when each iterator is inside ``next()`` right now).
        """
        if self.drop_prepared():
            return True
        for it in self.live():
            behind = it.behind
            if it.expire(
                f"{behind} newer epochs started since it was last advanced, and {by} needed the "
                "room its entries pinned (it expires the iterators of earlier epochs, oldest first, "
                "rather than wait for them)"
            ):
                logger.info(
                    "dask_reservoir: expired the iterator of an earlier epoch (%d behind): %s needs the room its "
                    "entries pinned",
                    behind,
                    by,
                )
                return True
        return False

    # ------------------------------------------------------------------ orders
    def _order(self, n: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The sampler's order for ``epoch``: prepared by the builder when it guessed ``n`` right."""
        prepared, self._next_order = self._next_order, None
        if prepared is not None and prepared[:2] == (epoch, n) and prepared[2].done():
            if not prepared[2].cancelled():
                return prepared[2].result()
        elif prepared is not None:
            prepared[2].cancel()
        return epoch_order(self.sampler, n, epoch, positions=positions)

    def _prepare_order(self, n: int, epoch: int) -> None:
        """Compute the next epoch's order in the builder, for a reservoir of the same size.

        Only for the built-in samplers, whose order is a pure function of ``(n, epoch)``:
        a user's sampler is called once per epoch, by ``iter()``, as documented.
        """
        if self.options.prefetch_batches and type(self.sampler) is RandomSampler:
            sampler = self.sampler
            self._next_order = (epoch, n, self.builder.submit(lambda: epoch_order(sampler, n, epoch)))

    def close(self) -> None:
        """Drop the epoch prepared ahead and stop the batch builder's thread (idempotent)."""
        self.ahead.close()
        self.builder.close()

    def __repr__(self) -> str:
        return (
            f"<Epochs: started={self.started} next={self.number} live_iterators={len(self._iterators)} "
            f"prepared_ahead={self.ahead.handed}>"
        )


def serve_transform(options: ReservoirOptions) -> ServeTransform | None:
    """The ``transform=`` stage of a reservoir, seeded by ``transform_seed`` or a fresh entropy."""
    if options.transform is None:
        return None
    seed = options.transform_seed
    return ServeTransform(
        options.transform,
        batched=options.transform_batched,
        seed=int(np.random.SeedSequence().entropy) if seed is None else seed,  # type: ignore[arg-type]
        uid_column=options.uid_column,
    )
