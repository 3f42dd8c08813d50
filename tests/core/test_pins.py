"""SlotHolders and Pin: the slots held by entries, pinned by snapshots, released without the store lock."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import deque

import numpy as np

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.pins import Pin, SlotHolders
from dask_reservoir._core.store.table import SlotTable


class Thing:
    """A mutable object a table row may hold (weak-referenceable)."""

    def __init__(self, value: int) -> None:
        self.value = value


def entry(uid: int) -> Entry:
    return Entry(uid, uid, ({"x": uid},))


def test_a_pin_is_released_once_whatever_the_threads() -> None:
    queue: deque[int] = deque()
    pin = Pin(5, queue)
    assert not pin.released and "snapshot 5" in repr(pin)
    threads = [threading.Thread(target=pin.release) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(queue) == [5] and pin.released and "released" in repr(pin)


def test_a_removed_entry_frees_its_slot_unless_pinned() -> None:
    holders = SlotHolders(4)
    a, b, c = entry(0), entry(1), entry(2)
    ha, hb = holders.hold(a, None), holders.hold(b, None)
    assert (ha, hb) == (0, 1) and holders.kept_as_rows == 2 and holders.available() == 2
    assert holders.let_go(ha)  # no snapshot: free at once, reused first
    assert holders.entry_at(ha) is None and holders.kept_as_rows == 1
    assert holders.next_slot() == ha and holders.hold(c, None) == ha
    pin = holders.pin()
    assert not holders.let_go(hb)  # pinned: retired, still its entry's
    assert holders.entry_at(hb) is b and holders.retired == 1 and holders.live == 1
    assert holders.available() == 2  # slots 2 and 3: never used
    pin.release()
    assert holders.live == 1  # applied at the store's next call, not by the release
    assert holders.apply_releases().tolist() == [hb]
    assert holders.entry_at(hb) is None and holders.retired == 0 and holders.live == 0
    assert holders.apply_releases().tolist() == []  # nothing more to apply


def test_a_retired_slot_is_freed_by_its_last_pin_only() -> None:
    holders = SlotHolders(3)
    a = entry(0)
    handle = holders.hold(a, None)
    first, second = holders.pin(), holders.pin()
    holders.let_go(handle)
    first.release()
    assert holders.apply_releases().tolist() == [] and holders.entry_at(handle) is a
    second.release()
    assert holders.apply_releases().tolist() == [handle] and holders.entry_at(handle) is None


def test_a_pin_opened_after_a_put_does_not_hold_an_entry_put_later() -> None:
    holders = SlotHolders(3)
    pin = holders.pin()
    handle = holders.hold(entry(0), None)  # claimed after the snapshot opened: not read by it
    assert holders.let_go(handle) and holders.retired == 0
    pin.release()
    holders.apply_releases()
    assert holders.live == 0


def test_serve_counts_live_in_the_slots_and_stay_with_the_entry_once_freed() -> None:
    holders = SlotHolders(3)
    a, b = entry(0), entry(1)
    handles = np.array([holders.hold(a, None), holders.hold(b, None)])
    pin = holders.pin()
    holders.add_served(handles, np.array([0, 40]), np.array([3, 1]))
    assert (a.times_served, b.times_served, holders.positions_served) == (3, 1, 2)
    holders.let_go(int(handles[0]))  # retired: still counted in its slot
    holders.add_served(handles[:1], np.array([0]), np.array([2]))
    pin.release()
    holders.apply_releases()
    assert a.times_served == 5 and holders.positions_served == 2
    again = holders.hold(a, None)  # the same entry held again starts from its count
    assert again == handles[0] and a.times_served == 5


def test_concurrent_serve_counts_add_up() -> None:
    holders = SlotHolders(2)
    a = entry(0)
    handles = np.array([holders.hold(a, None)])

    def count() -> None:
        for _ in range(500):
            holders.add_served(handles, np.array([0]), np.array([1]))

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.times_served == 2000


def test_pinned_held_counts_the_entries_a_snapshot_reads() -> None:
    holders = SlotHolders(6)
    entries = [entry(i) for i in range(4)]
    for e in entries[:2]:
        e.handle = holders.hold(e, None)
    assert holders.pinned_held(reversed(entries[:2]), 2) == 0  # no snapshot open
    holders.pin()
    for e in entries[2:]:
        e.handle = holders.hold(e, None)
    assert holders.pinned_held(reversed(entries), 4) == 2  # the two put before the snapshot


def test_freed_table_slots_drop_their_objects() -> None:
    holders = SlotHolders(3)
    first = {"o": Thing(0)}
    table = SlotTable.infer(first, size=3)
    assert table is not None
    a, b = Entry(0, 0, ()), Entry(1, 1, ())
    table.write(holders.next_slot(), first)
    ha = holders.hold(a, table)
    table.write(holders.next_slot(), {"o": Thing(1)})
    hb = holders.hold(b, table)
    assert holders.table is table and holders.kept_as_rows == 0 and holders.slotted(ha)
    gone_a = weakref.ref(table.read_row(ha, copy=False)["o"])
    gone_b = weakref.ref(table.read_row(hb, copy=False)["o"])
    del first
    assert holders.let_go(ha)  # freed at once: the table forgets the object
    pin = holders.pin()
    assert not holders.let_go(hb)  # retired: the object stays readable
    gc.collect()
    assert gone_a() is None and gone_b() is not None
    pin.release()
    holders.apply_releases()
    gc.collect()
    assert gone_b() is None


def test_reset_starts_a_new_pool_and_drops_the_table() -> None:
    holders = SlotHolders(2)
    a = entry(0)
    table = SlotTable.infer({"x": 1}, size=2)
    holders.hold(a, table)
    holders.add_served(np.array([0]), np.array([0]), np.array([4]))
    holders.let_go(0)
    holders.hold(entry(1), None)
    holders.let_go(1)
    holders.reset()
    assert holders.table is None and holders.used == 0 and holders.available() == 2
    assert holders.entry_at(0) is None and a.times_served == 4
    assert not holders.in_table(np.arange(2)).any()
    assert "size=2 free=2 retired=0 live_snapshots=0" in repr(holders)
