"""SlotHolders and Pin: the slots held by entries, pinned by snapshots, released without the store lock."""

from __future__ import annotations

import gc
import threading
import weakref
from collections import deque

import numpy as np

from dask_reservoir._core.store.pins import Pin, SlotHolders
from dask_reservoir._core.store.table import SlotTable


class Thing:
    """A mutable object a table row may hold (weak-referenceable)."""

    def __init__(self, value: int) -> None:
        self.value = value


def hold(holders: SlotHolders, *uids: int, table: SlotTable | None = None) -> list[int]:
    """Claim a slot per UID and hold it for the entry of that UID (position = UID), kept as rows unless ``table``."""
    slots = holders.claim(len(uids))
    positions = np.array(uids, np.int64)
    rows = None if table is not None else [({"x": uid},) for uid in uids]
    holders.hold(
        slots, positions=positions, uids=list(uids), loaded_at=positions * 1.0, table=table, rows=rows
    )
    return slots.tolist()


def let_go(holders: SlotHolders, *slots: int) -> list[bool]:
    return holders.let_go(np.array(slots, np.int64)).tolist()


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
    ha, hb = hold(holders, 0, 1)
    assert (ha, hb) == (0, 1) and holders.kept_as_rows == 2 and holders.available() == 2
    assert let_go(holders, ha) == [True]  # no snapshot: free at once, reused first
    assert holders.entry_at(ha) is None and holders.kept_as_rows == 1
    assert holders.next_slot() == ha and hold(holders, 2) == [ha]
    pin = holders.pin()
    assert let_go(holders, hb) == [False]  # pinned: retired, still its entry's
    kept = holders.entry_at(hb)
    assert kept is not None and (kept.uid, kept.position, kept.rows) == (1, 1, ({"x": 1},))
    assert holders.rows_at(hb) == ({"x": 1},) and holders.retired == 1 and holders.live == 1
    assert holders.available() == 2  # slots 2 and 3: never used
    pin.release()
    assert holders.live == 1  # applied at the store's next call, not by the release
    assert holders.apply_releases().tolist() == [hb]
    assert holders.entry_at(hb) is None and holders.retired == 0 and holders.live == 0
    assert holders.apply_releases().tolist() == []  # nothing more to apply


def test_a_retired_slot_is_freed_by_its_last_pin_only() -> None:
    holders = SlotHolders(3)
    (handle,) = hold(holders, 0)
    first, second = holders.pin(), holders.pin()
    let_go(holders, handle)
    first.release()
    assert holders.apply_releases().tolist() == [] and holders.entry_at(handle) is not None
    second.release()
    assert holders.apply_releases().tolist() == [handle] and holders.entry_at(handle) is None


def test_a_pin_opened_after_a_put_does_not_hold_an_entry_put_later() -> None:
    holders = SlotHolders(3)
    pin = holders.pin()
    (handle,) = hold(holders, 0)  # claimed after the snapshot opened: not read by it
    assert let_go(holders, handle) == [True] and holders.retired == 0
    pin.release()
    holders.apply_releases()
    assert holders.live == 0


def test_several_slots_let_go_at_once_are_freed_or_retired_each() -> None:
    holders = SlotHolders(6)
    old = hold(holders, 0, 1, 2)
    pin = holders.pin()
    new = hold(holders, 3, 4)
    assert let_go(holders, old[1], new[0], old[0], new[1]) == [False, True, False, True]
    assert holders.retired == 2 and holders.next_slot() == new[1]  # the last freed, reused first
    assert holders.claim(2).tolist() == [new[1], new[0]]
    pin.release()
    assert sorted(holders.apply_releases().tolist()) == sorted([old[0], old[1]])


def test_serve_counts_live_in_the_slots() -> None:
    holders = SlotHolders(3)
    handles = np.array(hold(holders, 0, 1))
    pin = holders.pin()
    holders.add_served(handles, np.array([0, 40]), np.array([3, 1]))
    assert [holders.entry_at(h).times_served for h in handles.tolist()] == [3, 1]  # type: ignore[union-attr]
    assert holders.positions_served == 2 and holders.served(handles).tolist() == [3, 1]
    let_go(holders, int(handles[0]))  # retired: still counted in its slot
    holders.add_served(handles[:1], np.array([0]), np.array([2]))
    assert holders.entry_at(int(handles[0])).times_served == 5  # type: ignore[union-attr]
    pin.release()
    holders.apply_releases()
    assert holders.positions_served == 2
    (again,) = hold(holders, 0)  # a new entry in the freed slot starts from 0
    assert again == handles[0] and holders.entry_at(again).times_served == 0  # type: ignore[union-attr]
    holders.set_served(again, 7)
    assert holders.served(np.array([again])).tolist() == [7]


def test_concurrent_serve_counts_add_up() -> None:
    holders = SlotHolders(2)
    handles = np.array(hold(holders, 0))

    def count() -> None:
        for _ in range(500):
            holders.add_served(handles, np.array([0]), np.array([1]))

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert holders.entry_at(int(handles[0])).times_served == 2000  # type: ignore[union-attr]


def test_what_each_slot_holds_is_read_from_arrays() -> None:
    holders = SlotHolders(4)
    slots = hold(holders, 5, 9)
    assert holders.uids_at(np.array(slots[::-1])) == [9, 5]
    assert holders.loaded_at(np.array(slots)).tolist() == [5.0, 9.0]
    assert holders.uids_at(np.array([], np.int64)) == []
    assert holders.opened == 0 and holders.newest_open == -1
    pin = holders.pin()
    assert holders.opened == 1 and holders.newest_open == 0
    pin.release()


def test_freed_table_slots_drop_their_objects() -> None:
    holders = SlotHolders(3)
    first = {"o": Thing(0)}
    table = SlotTable.infer(first, size=3)
    assert table is not None
    table.write(holders.next_slot(), first)
    (ha,) = hold(holders, 0, table=table)
    table.write(holders.next_slot(), {"o": Thing(1)})
    (hb,) = hold(holders, 1, table=table)
    assert holders.table is table and holders.kept_as_rows == 0 and holders.slotted(ha)
    assert holders.entry_at(ha).rows == () and holders.entry_at(ha).slot == ha  # type: ignore[union-attr]
    gone_a = weakref.ref(table.read_row(ha, copy=False)["o"])
    gone_b = weakref.ref(table.read_row(hb, copy=False)["o"])
    del first
    assert let_go(holders, ha) == [True]  # freed at once: the table forgets the object
    pin = holders.pin()
    assert let_go(holders, hb) == [False]  # retired: the object stays readable
    gc.collect()
    assert gone_a() is None and gone_b() is not None
    pin.release()
    holders.apply_releases()
    gc.collect()
    assert gone_b() is None


def test_freed_slots_drop_their_uids_and_rows() -> None:
    holders = SlotHolders(2)
    uid = Thing(3)
    slots = holders.claim(1)
    holders.hold(slots, positions=np.array([0]), uids=[uid], loaded_at=np.zeros(1), rows=[({"x": Thing(4)},)])
    gone_uid, gone_row = weakref.ref(uid), weakref.ref(holders.rows_at(0)[0]["x"])
    del uid
    holders.let_go(slots)
    gc.collect()
    assert gone_uid() is None and gone_row() is None and holders.kept_as_rows == 0


def test_reset_starts_a_new_pool_and_drops_the_table() -> None:
    holders = SlotHolders(2)
    table = SlotTable.infer({"x": 1}, size=2)
    hold(holders, 0, table=table)
    holders.add_served(np.array([0]), np.array([0]), np.array([4]))
    let_go(holders, 0)
    hold(holders, 1)
    let_go(holders, 1)
    holders.reset()
    assert holders.table is None and holders.used == 0 and holders.available() == 2
    assert holders.entry_at(0) is None and holders.positions_served == 1
    assert not holders.in_table(np.arange(2)).any()
    assert "size=2 free=2 retired=0 live_snapshots=0" in repr(holders)


def test_an_entry_handed_back_is_a_copy_of_every_field_of_its_slot() -> None:
    holders = SlotHolders(3)
    slots = holders.claim(2)
    holders.hold(
        slots,
        positions=np.array([0, 7]),
        uids=np.array(["a", "b"], dtype=object),
        loaded_at=np.array([1.5, 2.5]),
        load_seconds=np.array([0.25, 0.75]),
        rows=[({"x": 1},), ({"x": 2},)],
    )
    a = holders.entry_at(int(slots[0]))
    assert a is not None and (a.uid, a.position, a.rows, a.loaded_at, a.load_seconds) == (
        "a",
        0,
        ({"x": 1},),
        1.5,
        0.25,
    )
    assert (a.slot, a.handle, a.times_served) == (None, int(slots[0]), 0)
    holders.reset()  # the entry at position 0 too
    assert holders.entry_at(int(slots[0])) is None and holders.entry_at(int(slots[1])) is None
    assert holders.kept_as_rows == 2  # reset drops what slots hold, not the count of held slots


def test_several_snapshots_retire_and_free_slots_let_go_at_once() -> None:
    holders = SlotHolders(8)
    first = hold(holders, 0, 1)
    old = holders.pin()
    second = hold(holders, 2, 3)
    new = holders.pin()
    assert let_go(holders, *first, *second) == [False, False, False, False]  # all read by a snapshot
    old.release()
    assert sorted(holders.apply_releases().tolist()) == []  # the newer one still reads them all
    new.release()
    assert sorted(holders.apply_releases().tolist()) == sorted(first + second)


def test_a_slot_never_held_has_no_entry_and_a_held_one_no_running_time_unless_given() -> None:
    holders = SlotHolders(3)
    assert [holders.entry_at(slot) for slot in range(3)] == [None, None, None]
    (handle,) = hold(holders, 4)  # no load_seconds given
    entry = holders.entry_at(handle)
    assert entry is not None and (entry.position, entry.load_seconds) == (4, 0.0)
    assert holders.entry_at(1) is None and holders.entry_at(2) is None  # still never held


def test_letting_go_of_no_slots_changes_nothing() -> None:
    holders = SlotHolders(2)
    hold(holders, 0)
    free = holders.let_go(np.array([], np.int64))
    assert free.dtype == bool and free.tolist() == []
    assert holders.available() == 1 and holders.kept_as_rows == 1 and holders.retired == 0


def test_snapshots_released_together_free_the_slots_of_each() -> None:
    holders = SlotHolders(4)
    (a,) = hold(holders, 0)
    first = holders.pin()  # reads a
    assert let_go(holders, a) == [False]
    (b,) = hold(holders, 1)
    second = holders.pin()  # reads b only: a was removed before it opened
    assert let_go(holders, b) == [False] and holders.retired == 2
    first.release()
    second.release()
    assert sorted(holders.apply_releases().tolist()) == sorted([a, b])  # both, in one call
    assert holders.retired == 0 and holders.live == 0 and holders.available() == 4


def test_positions_served_remembers_every_position_as_the_record_grows() -> None:
    holders = SlotHolders(2)
    handles = np.array(hold(holders, 0, 1))
    holders.add_served(handles, np.array([3, 5]), np.array([1, 1]))
    holders.add_served(handles[:1], np.array([1000]), np.array([1]))  # far beyond the first positions
    assert holders.positions_served == 3
    holders.add_served(handles, np.array([5, 1000]), np.array([1, 1]))  # served again: counted once
    assert holders.positions_served == 3
