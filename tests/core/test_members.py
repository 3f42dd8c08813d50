"""Members: the store's entries by UID (oldest first) and by source position, with eviction."""

from __future__ import annotations

import pytest

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.members import Members
from dask_reservoir._core.store.pins import SlotHolders


def setup(capacity: int) -> tuple[Members, SlotHolders]:
    holders = SlotHolders(capacity + 2)
    return Members(capacity, holders), holders


def add(members: Members, holders: SlotHolders, uid: object, position: int) -> list[object]:
    entry = Entry(uid, position, ({"x": 1},))
    entry.handle = holders.hold(entry, None)
    members.check_position(entry)
    return [e.uid for e in members.add(entry)]


def test_the_oldest_is_evicted_and_a_replacement_becomes_the_newest() -> None:
    members, holders = setup(3)
    assert [add(members, holders, uid, uid) for uid in range(3)] == [[], [], []]
    assert add(members, holders, 0, 0) == []  # replaces 0: now the newest
    assert members.uids() == [1, 2, 0] and members.newest_uid() == 0
    assert [e.uid for e in members.newest_first()] == [0, 2, 1]
    assert add(members, holders, 3, 3) == [1]
    assert (members.ingested, members.evicted, members.replaced) == (5, 1, 1)
    assert members.in_source_order()[0].tolist() == [0, 2, 3]
    assert holders.available() == 2  # five slots: three held, the two let go are free
    assert "size=3/3 ingested=5 evicted=1 replaced=1" in repr(members)


def test_a_removed_entry_lets_go_of_its_slot() -> None:
    members, holders = setup(1)
    add(members, holders, "a", 0)
    first = members.get("a")
    assert first is not None and first.handle == 0
    pin = holders.pin()
    add(members, holders, "b", 1)  # evicts "a", pinned: retired
    assert first.handle is None and first.slot is None and holders.retired == 1
    pin.release()
    holders.apply_releases()
    assert holders.retired == 0


def test_others_counts_the_entries_that_stay_beside_a_put() -> None:
    members, holders = setup(3)
    assert members.others("a") == 0 and members.newest_uid() is None
    add(members, holders, "a", 0)
    add(members, holders, "b", 1)
    assert members.others("a") == 1 and members.others("c") == 2
    assert "a" in members and "c" not in members and len(members) == 2


def test_positions_are_unique_across_uids() -> None:
    members, holders = setup(3)
    add(members, holders, "a", 4)
    add(members, holders, "a", 4)  # the same UID may take its position again
    with pytest.raises(
        ValueError, match=r"^entry positions must be unique: position 4 holds UID 'a', got UID 'b'$"
    ):
        add(members, holders, "b", 4)


def test_clear_removes_every_entry_and_keeps_the_counters() -> None:
    members, holders = setup(2)
    for uid in range(3):
        add(members, holders, uid, uid)
    entries = members.entries()
    members.clear()
    assert len(members) == 0 and members.uids() == [] and members.in_source_order()[0].tolist() == []
    assert all(e.handle is None for e in entries) and holders.available() == 4
    assert (members.ingested, members.evicted) == (3, 1)
