"""The reservoir store: entries by source position, their columnar slots, and the snapshots epochs read.

:class:`~dask_reservoir._core.store.store.ReservoirStore` composes the parts, all of them
arrays rather than an object per entry: ``members`` (entries by position, oldest first),
``admission`` and ``layout`` (what a put takes), ``pins`` (what each slot holds, and the
snapshots pinning them), ``slots`` and ``table`` (the slot pool and the column arrays),
``room`` (the memory bound's arithmetic), ``runs`` (a finished task's rows put at once),
``source_order`` and ``snapshot`` (an epoch's frozen view).
"""

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._core.store.store import UNLIMITED_ROOM, NoRoomError, ReservoirStore
from dask_reservoir._core.store.table import StoreError

__all__ = ["UNLIMITED_ROOM", "Entry", "NoRoomError", "ReservoirStore", "Snapshot", "StoreError"]
