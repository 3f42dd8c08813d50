"""Checking and storing resume states (pure: no cluster)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dask_reservoir._core.checkpoint import (
    STATE_FORMAT,
    STATE_VERSION,
    check_state,
    jsonable_uid,
    legacy_uids_digest,
    order_digest,
    read_state,
    uids_digest,
    write_state,
)
from dask_reservoir._core.uid_index import UidIndex

UIDS = [10, 11, 12, 13]


def state(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "source": {"rows": 4, "uid_column": "uid", "uids_sha256": uids_digest(UIDS)},
        "rank": 0,
        "world_size": 1,
        "epoch": 7,
        "source_pass": 2,
        "source_cursor": 1,
        "pending_uids": [13, 11],
        "members": [{"uid": 11}, {"uid": 12}],
        "quarantined": [10],
    }
    return {**base, **changes}


def check(s: dict[str, Any], **kw: Any) -> Any:
    args = {"uids": UIDS, "uid_column": "uid", "rank": 0, "world_size": 1, "position": UIDS.index, **kw}
    position = args.pop("position")

    def lookup(uid: Any) -> int:
        try:
            return int(position(uid))
        except ValueError:
            raise KeyError(uid) from None

    return check_state(s, position=lookup, **args)


def test_a_good_state_gives_members_then_pending_first_without_duplicates() -> None:
    point = check(state())
    assert point.epoch == 7 and (point.source_pass, point.source_cursor) == (2, 1)
    assert point.first == (1, 2, 3, 1)  # members 11, 12, then pending 13, 11 (a member loading again)
    assert point.quarantined == (10,)


@pytest.mark.parametrize(
    ("changes", "kw", "message"),
    [
        ({"format": "other"}, {}, r"state\['format'\] must be 'dask_reservoir.state', got 'other'"),
        ({"version": 99}, {}, r"state\['version'\] 99 is not supported .*reads versions 1, 2, 3\)$"),
        ({}, {"uids": [10, 11, 12, 13, 14]}, r"saved on a source of 4 rows .* this source has 5 rows"),
        ({}, {"uid_column": "id"}, r"UID column 'uid'; this source has 4 rows with UID column 'id'"),
        (
            {},
            {"uids": [10, 11, 13, 12]},
            r"^the state was saved on a source with other UIDs \(or another row order\): uids_sha256 differs$",
        ),
        ({}, {"rank": 1, "world_size": 2}, r"saved by rank 0 of 1; this reservoir is rank 1 of 2"),
        ({"members": [{"uid": 99}]}, {}, r"state names UID 99, which is not in this source"),
        ({"epoch": -1}, {}, r"state\['epoch'\] must be an int >= 0, got -1"),
        ({"source_cursor": "1"}, {}, r"state\['source_cursor'\] must be an int >= 0, got '1'"),
        ({"members": "all"}, {}, r"state\['members'\] must be a list"),
    ],
)
def test_states_that_do_not_fit_are_refused(
    changes: dict[str, Any], kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check(state(**changes), **kw)


def test_a_state_must_be_a_dict() -> None:
    with pytest.raises(TypeError, match=r"^state must be a dict from state_dict\(\), got list$"):
        check([1, 2])  # type: ignore[arg-type]


def test_uids_convert_to_json_and_digest_follows_order() -> None:
    assert jsonable_uid(np.int64(5)) == 5 and type(jsonable_uid(np.int64(5))) is int
    assert jsonable_uid(np.str_("a")) == "a"
    with pytest.raises(TypeError, match="got tuple"):
        jsonable_uid((1, 2))
    assert uids_digest([1, 2]) != uids_digest([2, 1])
    assert uids_digest([1, 2]) != uids_digest(["1", "2"])
    assert uids_digest(np.array([1, 2])) == uids_digest([1, 2])


def test_write_is_atomic_and_read_names_a_corrupted_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, state())
    assert read_state(path) == state()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind
    path.write_text('{"format": "dask_reservoir.sta')
    with pytest.raises(ValueError, match=r"state.json' is not a dask_reservoir state file \(corrupted JSON"):
        read_state(path)
    path.write_text("[1, 2]")
    with pytest.raises(
        ValueError, match=r"state.json' is not a dask_reservoir state file \(no JSON object\)"
    ):
        read_state(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"quarantined": [[1, 2]]},
            r"state names UID \[1, 2\]: UIDs in a state are ints, floats, strs or bools",
        ),
        ({"quarantined": [99]}, r"state names UID 99, which is not in this source"),
        ({"pending_uids": [{"a": 1}]}, r"state names UID \{'a': 1\}"),
        ({"members": [{"uid": [10]}]}, r"state names UID \[10\]"),
    ],
)
def test_uids_of_a_state_are_checked_before_anything_is_applied(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check(state(**changes))


def test_a_state_at_the_very_start_and_without_optional_lists_is_accepted() -> None:
    fresh = state(epoch=0, source_pass=0, source_cursor=0, members=[], quarantined=[])
    del fresh["pending_uids"]
    point = check(fresh)
    assert (point.epoch, point.source_pass, point.source_cursor, point.first, point.members) == (
        0,
        0,
        0,
        (),
        0,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": [5]}, r"^state\['members'\] must be a list of \{'uid': \.\.\.\} dicts$"),
        ({"members": [{"age_seconds": 1}]}, r"state\['members'\] must be a list"),
        ({"source": "x"}, r"state\['source'\] must be a dict, got 'x'"),
        ({"pending_uids": "11"}, r"^state\['pending_uids'\] and state\['quarantined'\] must be lists$"),
        ({"quarantined": (10,)}, r"state\['pending_uids'\] and state\['quarantined'\] must be lists"),
        ({"samplers": "x"}, r"state\['samplers'\] must be a dict, got 'x'"),
        (
            {"samplers": {"reservoir_entropy": "-3"}},
            r"state\['samplers.reservoir_entropy'\] must be a decimal string or None, got '-3'",
        ),
        ({"epoch": True}, r"state\['epoch'\] must be an int >= 0, got True"),
        ({"samplers": {"source_entropy": 5}}, r"state\['samplers.source_entropy'\] must be a decimal string"),
        ({"next_fill": -1}, r"state\['next_fill'\] must be an int >= 0, got -1"),
        ({"source_order_sha256": 3}, r"state\['source_order_sha256'\] must be a str or None, got 3"),
    ],
)
def test_malformed_fields_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check(state(**changes))


def legacy(version: int, **changes: Any) -> dict[str, Any]:
    """A state of an older version, with the UID digest that version wrote."""
    source = {"rows": 4, "uid_column": "uid", "uids_sha256": legacy_uids_digest(UIDS)}
    return state(version=version, source=source, **changes)


@pytest.mark.filterwarnings("ignore:the state has format version:FutureWarning")
def test_each_version_is_checked_with_the_uid_digest_it_wrote() -> None:
    """Version 3 digests UIDs vectorized; versions 1 and 2 wrote one repr per UID: each is read as written."""
    assert uids_digest(UIDS) != legacy_uids_digest(UIDS)
    for version in (1, 2):
        assert check(legacy(version)).version == version
        with pytest.raises(ValueError, match="uids_sha256 differs"):
            check(state(version=version))  # a version 3 digest in an older state: another source
    with pytest.raises(ValueError, match="uids_sha256 differs"):
        check(legacy(3))
    with pytest.raises(ValueError, match="uids_sha256 differs"):
        check(state(), uids=[10, 11, 13, 12])


@pytest.mark.filterwarnings("ignore:the state has format version:FutureWarning")
def test_version_2_carries_the_orders_and_version_1_is_still_read() -> None:
    """Issue 16, points 3 and 4: the entropy of unseeded samplers, the pass order's digest, the next fill."""
    saved = {"source_entropy": str(2**127 + 5), "reservoir_entropy": None}
    point = check(state(samplers=saved, source_order_sha256="ab", next_fill=13, epochs=3))
    assert (point.version, point.source_entropy, point.reservoir_entropy) == (3, 2**127 + 5, None)
    assert (point.source_order_sha256, point.next_fill, point.epochs) == ("ab", 13, 3)
    two = check(legacy(2, samplers=saved, source_order_sha256="ab", next_fill=13, epochs=3))
    assert (two.version, two.source_entropy, two.source_order_sha256, two.first) == (
        2,
        2**127 + 5,
        "ab",
        point.first,
    )
    assert (two.next_fill, two.epochs) == (13, 3)
    old = check(legacy(1, samplers=saved, source_order_sha256="ab", next_fill=13))
    assert (old.version, old.source_entropy, old.source_order_sha256, old.next_fill) == (1, None, None, None)


def test_older_versions_are_read_with_a_future_warning_at_the_callers_line() -> None:
    for version in (1, 2):
        with pytest.warns(
            FutureWarning, match=rf"format version {version}, read until dask_reservoir 0\.3"
        ) as seen:
            assert check(legacy(version)).version == version
        assert "MUTANT_UNDER_TEST" in os.environ or [w.filename for w in seen] == [
            __file__
        ]  # see test_deprecations
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(state())  # the current version: no warning


@pytest.mark.parametrize(
    "uids",
    [np.array(UIDS), pd.array([str(u) for u in UIDS], dtype="string[pyarrow]")],
    ids=["int64", "arrow strings"],
)
def test_a_uid_index_finds_the_state_uids_by_one_scan(uids: Any) -> None:
    """The UIDs a state names are found vectorized, without building the source's lookup table."""
    index = UidIndex(uids)
    as_saved = [index[i] for i in range(4)]  # as JSON gives them back: Python ints or strs
    saved = state(
        source={"rows": 4, "uid_column": "uid", "uids_sha256": uids_digest(as_saved)},
        members=[{"uid": as_saved[1]}, {"uid": as_saved[2]}],
        pending_uids=[as_saved[3], as_saved[1]],
        quarantined=[as_saved[0]],
    )
    point = check_state(saved, uids=index, uid_column="uid", rank=0, world_size=1, position=None)
    assert point.first == (1, 2, 3, 1) and index._index is None
    missing = "99" if isinstance(as_saved[0], str) else 99
    with pytest.raises(ValueError, match=f"state names UID {missing!r}, which is not in this source"):
        check_state(
            {**saved, "quarantined": [as_saved[0], missing]},
            uids=index,
            uid_column="uid",
            rank=0,
            world_size=1,
            position=None,
        )


def test_optional_fields_absent_take_their_defaults() -> None:
    """A state without quarantine, epochs, samplers or next fill: none quarantined, no entropy, nothing to fill."""
    bare = state()
    del bare["quarantined"]
    point = check(bare)
    assert (point.quarantined, point.epochs, point.next_fill) == ((), 0, None)
    assert (point.source_entropy, point.reservoir_entropy, point.source_order_sha256) == (None, None, None)


def test_the_entropy_of_each_unseeded_sampler_is_read_back() -> None:
    saved = {"source_entropy": "12", "reservoir_entropy": str(2**128 - 1)}
    point = check(state(samplers=saved))
    assert (point.source_entropy, point.reservoir_entropy) == (12, 2**128 - 1)
    only_reservoir = check(state(samplers={"reservoir_entropy": "7"}))
    assert (only_reservoir.source_entropy, only_reservoir.reservoir_entropy) == (None, 7)


def test_legacy_and_order_digests_are_the_formats_states_hold() -> None:
    """Versions 1 and 2: one repr per UID (JSON's value: numpy scalars as Python ones) and a NUL; orders: int64."""
    uids: list[Any] = [10, "a", 1.5, True]
    expected = hashlib.sha256(b"".join(repr(u).encode() + b"\0" for u in uids)).hexdigest()
    assert legacy_uids_digest(uids) == expected
    assert legacy_uids_digest(np.array([10, 11])) == legacy_uids_digest([10, 11])
    order = hashlib.sha256(b"".join(p.to_bytes(8, "little") for p in (2, 0, 1))).hexdigest()
    assert order_digest(np.array([2, 0, 1], np.int32)) == order_digest([2, 0, 1]) == order
    assert order_digest(np.array([2, 0, 1], np.uint16)) == order


def test_a_state_uid_is_found_as_position_finds_it() -> None:
    """A bool in a state names the row ``position(True)`` gives, not the vectorized lookup's number 1.0."""
    index = UidIndex(np.array([1.0, 2.0, 0.5]))
    assert not index.has(True)
    saved = state(
        source={"rows": 3, "uid_column": "uid", "uids_sha256": uids_digest(index)},
        members=[{"uid": 2.0}],
        pending_uids=[],
        quarantined=[True],
    )
    with pytest.raises(ValueError, match="state names UID True, which is not in this source"):
        check_state(saved, uids=index, uid_column="uid", rank=0, world_size=1, position=index.position)
    point = check_state(
        {**saved, "quarantined": [0.5]}, uids=index, uid_column="uid", rank=0, world_size=1, position=None
    )
    assert point.first == (1,) and point.quarantined == (0.5,)
