"""The store's memory bound in numbers: its slots beyond capacity, and how many puts succeed now.

Pure functions, no threads and no dask.  A store of ``capacity`` entries has
``capacity + headroom(capacity)`` slots: the headroom holds entries removed while a
live snapshot still reads them.  :func:`room` says how many puts succeed in a row
from now, whatever their UIDs.
"""

from __future__ import annotations

import math
import sys
from typing import Any

__all__ = ["UNLIMITED_ROOM", "NoRoomError", "headroom", "no_room_message", "room"]

UNLIMITED_ROOM = sys.maxsize
"""What :func:`room` returns when no put can fail before the next snapshot."""


class NoRoomError(RuntimeError):
    """``put()`` found every slot held by an entry or retired (pinned by a live snapshot)."""


def headroom(capacity: int) -> int:
    """Slots beyond ``capacity`` for entries removed while a live snapshot reads them.

    Examples
    --------
    >>> headroom(1), headroom(4), headroom(5)
    (1, 2, 3)
    """
    return math.ceil(capacity / 2)


def room(*, free: int, capacity: int, held: int, pinned: int) -> int:
    """How many puts succeed in a row, with ``free`` slots and ``pinned`` of the ``held`` entries read.

    A put claims a free slot; the entry it replaces or evicts frees its slot, unless
    a live snapshot pins it (it is then retired).  So puts never fail before the next
    snapshot (:data:`UNLIMITED_ROOM`) when the free slots outnumber the pinned entries
    plus the empty places; otherwise at least the free slots' number of puts succeed.

    Examples
    --------
    >>> room(free=5, capacity=4, held=4, pinned=4) == UNLIMITED_ROOM  # more than a capacity free
    True
    >>> room(free=1, capacity=2, held=2, pinned=2), room(free=0, capacity=2, held=2, pinned=1)
    (1, 0)
    >>> room(free=2, capacity=2, held=2, pinned=1) == UNLIMITED_ROOM  # each put frees a slot soon enough
    True
    """
    if free > capacity:  # more than any puts before the next snapshot can retire
        return UNLIMITED_ROOM
    at_risk = pinned + capacity - held
    return UNLIMITED_ROOM if free > at_risk else free


def no_room_message(uid: object, pool_size: int, capacity: int, entries: int, holders: Any) -> str:
    """Why a put of ``uid`` cannot be done now (every slot held or retired)."""
    return (
        f"cannot put UID {uid!r}: all {pool_size} slots (capacity {capacity} + "
        f"headroom {pool_size - capacity}) are held by {entries} entries and "
        f"{holders.retired} removed entries that {holders.live} live snapshots "
        "(iterators) still read; exhaust or drop an iterator, or check room() before put()"
    )
