"""Resume: a reservoir's state as a small JSON-able dict, checked before it is applied.

Pure code.  :func:`check_state` validates a state against the source it is loaded on,
and returns a :class:`ResumePoint` for the ledger (where the source order goes on,
which rows to submit first) and the reservoir (the epoch number).  The format is
versioned (:data:`STATE_FORMAT`, :data:`STATE_VERSION`); entries themselves are not in
the state: a resumed reservoir loads its former members again, first.

Version 2 adds what makes the orders recoverable: the entropy of unseeded samplers
(their orders are functions of it, as a seeded sampler's are of its seed), the SHA-256
of the interrupted pass's order (checked against the order the resumed run computes,
so that a sampler drawing another order is refused instead of skipping rows), and,
with ``deterministic=True``, how many entries the next ``iter()`` ingests.  Version 1
states are still read: their orders come from the samplers as given (exact for seeded
and sequential samplers); with an unseeded ``source_sampler`` the rest of the
interrupted pass cannot be known, so the resumed run starts the next pass after the
former members and the rows that were out (logged).

Version 3 changes only how ``uids_sha256`` is computed: vectorized (integers as int64
bytes, strings as their UTF-8 bytes and offsets), so that saving and loading the state
of a source of ten million rows takes a fraction of a second.  States of versions 1 and
2 are checked with their own digest (:func:`legacy_uids_digest`).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dask_reservoir._core.deprecations import old_state_version, warn_future
from dask_reservoir._core.uid_index import UidIndex

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "ResumePoint",
    "check_state",
    "jsonable_uid",
    "legacy_uids_digest",
    "order_digest",
    "read_state",
    "uids_digest",
    "write_state",
]

STATE_FORMAT = "dask_reservoir.state"
STATE_VERSION = 3
READ_VERSIONS = (1, 2, 3)
"""State versions :func:`check_state` reads (see the module docstring for version 1)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed reservoir goes on.

    ``source_pass``/``source_cursor``: the ledger's pass over the source and its
    position in that pass's order; ``first``: source positions submitted before
    anything else (the former members in ingestion order, then the rows that were
    out, in submission order: a member being loaded again is in both).
    """

    epoch: int
    members: int
    """How many of ``first`` are former members (the rest were out)."""
    epochs: int
    source_pass: int
    source_cursor: int
    first: tuple[int, ...]
    quarantined: tuple[Hashable, ...]
    version: int = STATE_VERSION
    source_entropy: int | None = None
    """The entropy of the saving run's unseeded ``source_sampler`` (None: it had a seed, or version 1)."""
    reservoir_entropy: int | None = None
    """The same for ``reservoir_sampler``."""
    source_order_sha256: str | None = None
    """:func:`order_digest` of the order of pass ``source_pass - 1`` (None before the first pass)."""
    next_fill: int | None = None
    """``deterministic=True``: entries the saving run's next ``iter()`` would ingest (None: not saved)."""
    order: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The order of the interrupted pass once computed and checked against ``source_order_sha256``
    (so that the resumed ledger does not draw it again); None: not computed."""


def jsonable_uid(uid: Hashable) -> int | float | str | bool:
    """A UID as JSON holds it (numpy scalars become Python ones).

    Examples
    --------
    >>> jsonable_uid(np.int64(3)), jsonable_uid("a")
    (3, 'a')
    >>> jsonable_uid((1, 2))
    Traceback (most recent call last):
    ...
    TypeError: state_dict() needs UIDs that JSON holds as they are (int, float, str, bool), got tuple: (1, 2)
    """
    if isinstance(uid, np.generic):
        uid = uid.item()
    if isinstance(uid, (bool, int, float, str)):
        return uid
    raise TypeError(
        "state_dict() needs UIDs that JSON holds as they are (int, float, str, bool), "
        f"got {type(uid).__name__}: {uid!r}"
    )


def uids_digest(uids: Sequence[Hashable]) -> str:
    """SHA-256 of the source's UIDs in order (version 3): a state is loaded only on the same source.

    Vectorized for integer and string UIDs, and kept by a
    :class:`~dask_reservoir._core.uid_index.UidIndex` once computed (see
    :meth:`~dask_reservoir._core.uid_index.UidIndex.digest`).

    Examples
    --------
    >>> uids_digest([1, 2]) == uids_digest(np.array([1, 2])), uids_digest([1, 2]) == uids_digest([2, 1])
    (True, False)
    """
    return (uids if isinstance(uids, UidIndex) else UidIndex(uids)).digest()


def legacy_uids_digest(uids: Sequence[Hashable]) -> str:
    """The ``uids_sha256`` of states of versions 1 and 2: one ``repr`` per UID (slow at millions)."""
    h = hashlib.sha256()
    for uid in uids:
        h.update(repr(jsonable_uid(uid)).encode())
        h.update(b"\0")
    return h.hexdigest()


def order_digest(order: np.ndarray) -> str:
    """SHA-256 of a pass order (source positions as little-endian int64).

    Examples
    --------
    >>> order_digest(np.array([2, 0, 1])) == order_digest([2, 0, 1]), order_digest([0, 1]) == order_digest([1, 0])
    (True, False)
    """
    return hashlib.sha256(np.ascontiguousarray(order, dtype="<i8").tobytes()).hexdigest()


def _entropy(value: Any, key: str) -> int | None:
    """An entropy as saved (a decimal string, JSON keeps its 128 bits), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise ValueError(f"state[{key!r}] must be a decimal string or None, got {value!r}")
    return int(value)


def _optional_int(state: dict[str, Any], key: str) -> int | None:
    return None if state.get(key) is None else _int(state, key)


def _int(state: dict[str, Any], key: str) -> int:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"state[{key!r}] must be an int >= 0, got {value!r}")
    return int(value)


def _positions(named: list[Any], uids: Sequence[Hashable], position: Any) -> np.ndarray:
    """Source positions of the UIDs a state names (-1: not in the source), vectorized for a UidIndex."""
    if isinstance(uids, UidIndex) and not any(type(uid) is bool for uid in named):
        return uids.positions(named)
    found = np.full(len(named), -1, np.int64)
    for i, uid in enumerate(named):
        try:
            found[i] = int(position(uid))
        except KeyError:
            continue
    return found


def check_state(
    state: Any,
    *,
    uids: Sequence[Hashable],
    uid_column: str,
    rank: int,
    world_size: int,
    position: Any,
) -> ResumePoint:
    """Check ``state`` against this source and rank; the :class:`ResumePoint` it describes.

    ``position(uid)`` gives a UID's source position.  Raises ``ValueError`` (naming the
    field and the values) when the state is not a state of this library and version,
    was saved on another source (rows, UID column or UIDs differ) or another rank.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"state['format'] must be {STATE_FORMAT!r}, got {state.get('format')!r}")
    version = state.get("version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ValueError(
            f"state['version'] {version!r} is not supported (this dask_reservoir reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})"
        )
    warn_future(old_state_version(version, STATE_VERSION))
    source = state.get("source")
    if not isinstance(source, dict):
        raise ValueError(f"state['source'] must be a dict, got {source!r}")
    if source.get("rows") != len(uids) or source.get("uid_column") != uid_column:
        raise ValueError(
            f"the state was saved on a source of {source.get('rows')!r} rows with UID column "
            f"{source.get('uid_column')!r}; this source has {len(uids)} rows with UID column {uid_column!r}"
        )
    expected = uids_digest(uids) if version >= 3 else legacy_uids_digest(uids)
    if source.get("uids_sha256") != expected:
        raise ValueError(
            "the state was saved on a source with other UIDs (or another row order): uids_sha256 differs"
        )
    if (state.get("rank"), state.get("world_size")) != (rank, world_size):
        raise ValueError(
            f"the state was saved by rank {state.get('rank')!r} of {state.get('world_size')!r}; "
            f"this reservoir is rank {rank} of {world_size}"
        )
    members = state.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) and "uid" in m for m in members):
        raise ValueError("state['members'] must be a list of {'uid': ...} dicts")
    pending = state.get("pending_uids", [])
    quarantined = state.get("quarantined", [])
    if not isinstance(pending, list) or not isinstance(quarantined, list):
        raise ValueError("state['pending_uids'] and state['quarantined'] must be lists")
    named = [m["uid"] for m in members] + pending + quarantined
    for uid in named:
        if not isinstance(uid, (bool, int, float, str)):
            raise ValueError(f"state names UID {uid!r}: UIDs in a state are ints, floats, strs or bools")
    found = _positions(named, uids, position)
    missing = np.flatnonzero(found < 0)
    if len(missing):
        raise ValueError(f"state names UID {named[int(missing[0])]!r}, which is not in this source")
    first = found[: len(members) + len(pending)].tolist()
    samplers = state.get("samplers", {}) if version >= 2 else {}
    if not isinstance(samplers, dict):
        raise ValueError(f"state['samplers'] must be a dict, got {samplers!r}")
    digest = state.get("source_order_sha256") if version >= 2 else None
    if digest is not None and not isinstance(digest, str):
        raise ValueError(f"state['source_order_sha256'] must be a str or None, got {digest!r}")
    return ResumePoint(
        epoch=_int(state, "epoch"),
        members=len(members),
        epochs=_int(state, "epochs") if "epochs" in state else 0,
        source_pass=_int(state, "source_pass"),
        source_cursor=_int(state, "source_cursor"),
        first=tuple(first),
        quarantined=tuple(quarantined),
        version=int(version),
        source_entropy=_entropy(samplers.get("source_entropy"), "samplers.source_entropy"),
        reservoir_entropy=_entropy(samplers.get("reservoir_entropy"), "samplers.reservoir_entropy"),
        source_order_sha256=digest,
        next_fill=_optional_int(state, "next_fill") if version >= 2 else None,
    )


def write_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` as JSON to ``path`` atomically (a crash leaves the previous file)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, target)
    return target


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`write_state`; ``ValueError`` naming the file if it is not one."""
    try:
        state = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a dask_reservoir state file (corrupted JSON: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} is not a dask_reservoir state file (no JSON object)")
    return state
