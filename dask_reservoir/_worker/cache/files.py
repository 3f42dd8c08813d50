"""Result files of the persistent tier: one Parquet file per key under a directory or fsspec URL.

Runs on the workers (reads and writes) and on the client (the probe).  The bytes of
a file are made and checked by :mod:`~dask_reservoir._worker.cache.arrow_rows`;
this module puts them in place atomically and takes them back, treating a file
that does not decode as a miss (it is logged and deleted, so the result is
computed again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Hashable
from typing import Any

import fsspec

from dask_reservoir._worker.cache.arrow_rows import CorruptFile, decode_rows, encode_rows

__all__ = ["CacheFiles"]

logger = logging.getLogger("dask_reservoir")

_KEY = re.compile(r"[0-9a-z-]+(?:/[0-9a-z-]+)*")
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _replace_local(path: str, data: bytes) -> None:
    """Write ``data`` to the local ``path`` atomically: a temporary file in its directory, then a rename.

    No ``fsync``: a crash of the process leaves the old file or the new one (the rename is
    atomic); a power loss may leave a file renamed before its data reached the disk, which
    the content checksum catches when it is read (a miss, recomputed).  The fsync cost a
    third of a millisecond per file, 10 % of the cost of keeping a small result.
    """
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _rebuild(url: str, storage_options: dict[str, Any]) -> CacheFiles:
    """Unpickle a :class:`CacheFiles`: open its filesystem again."""
    return CacheFiles(url, storage_options=storage_options)


class CacheFiles:
    """The result files under one directory or fsspec URL: ``<root>/<key>.parquet``.

    Parameters
    ----------
    url : str or os.PathLike
        A local directory (made absolute) or an fsspec URL (``s3://bucket/cache``,
        ``memory://cache``...).  It need not exist: writes make it.
    storage_options : dict, optional
        Passed to :func:`fsspec.core.url_to_fs` (credentials, endpoints...).

    Attributes
    ----------
    url : str
        The URL or absolute path given.
    fs : fsspec.AbstractFileSystem
        Its filesystem.
    root : str
        The directory of the files, as a path of ``fs``.
    local : bool
        Whether ``fs`` is the local filesystem (then writes go through a
        temporary file and a rename; elsewhere each write is one ``pipe_file``,
        a single PUT on an object store).

    Notes
    -----
    Pickling keeps the URL and the storage options only; unpickling opens the
    filesystem again (fsspec caches its instances per process).

    Examples
    --------
    >>> import numpy as np
    >>> files = CacheFiles("memory://dask-reservoir-doctest/cache")
    >>> files.path("ab/ab12-c0ffee")
    '/dask-reservoir-doctest/cache/ab/ab12-c0ffee.parquet'
    >>> files.write("ab/ab12-c0ffee", [{"x": np.arange(3, dtype=np.float32), "sample_uid": 7}], uid=7) > 0
    True
    >>> rows, size = files.read("ab/ab12-c0ffee")
    >>> rows
    [{'x': array([0., 1., 2.], dtype=float32), 'sample_uid': 7}]
    >>> files.read("ab/ab34-c0ffee") is None
    True
    >>> files.fs.rm("/dask-reservoir-doctest", recursive=True)
    """

    def __init__(self, url: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None) -> None:
        text = os.fspath(url)
        if "://" not in text and "::" not in text:
            text = os.path.abspath(text)
        self.url: str = text
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        fs, root = fsspec.core.url_to_fs(text, **self.storage_options)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/") if root != "/" else root
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self.local: bool = bool({"file", "local"} & set(protocols))

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return (_rebuild, (self.url, self.storage_options))

    def __repr__(self) -> str:
        return f"CacheFiles({self.url!r})"

    def path(self, key: str) -> str:
        """The path of the file of ``key`` (``[0-9a-z-]`` parts joined by ``/``): ``<root>/<key>.parquet``.

        Examples
        --------
        >>> CacheFiles("memory://c").path("ab/cd-1")
        '/c/ab/cd-1.parquet'
        >>> CacheFiles("memory://c").path("../etc")
        Traceback (most recent call last):
        ...
        ValueError: a cache key is made of [0-9a-z-] parts joined by '/', got '../etc'
        """
        if not _KEY.fullmatch(key):
            raise ValueError(f"a cache key is made of [0-9a-z-] parts joined by '/', got {key!r}")
        return f"{self.root.rstrip('/')}/{key}.parquet"

    def _shown(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _put(self, path: str, data: bytes) -> None:
        if self.local:
            _replace_local(path, data)
        else:
            self.fs.pipe_file(path, data)

    def write(self, key: str, rows: list[dict[str, Any]], *, uid: Hashable) -> int:
        """Keep ``rows``, the result of ``uid``, as the file of ``key``; the number of bytes written.

        The file replaces any file of ``key`` at once: readers see the old file,
        no file or the new file, never a part of one.  Two writers of one key both
        succeed, and the last one's file stays.

        Raises
        ------
        TypeError
            A value that the file cannot hold faithfully (objects, lists, dicts,
            object arrays...), naming ``uid``, the column and the type.  Nothing
            is written.
        """
        path = self.path(key)
        data = encode_rows(rows, uid=uid, key=key)
        self._put(path, data)
        return len(data)

    def read(self, key: str) -> tuple[list[dict[str, Any]], int] | None:
        """The rows kept under ``key`` and the number of bytes read; None if there are none.

        A file that cannot be decoded into the rows written (truncated, damaged,
        of another format version, or whose values do not match their checksum)
        is a miss too: a warning on the ``dask_reservoir`` logger names it and
        the reason, and it is deleted, so the result is computed and written
        again.  Errors of the filesystem itself (permissions, network) are raised.
        """
        path = self.path(key)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            rows = decode_rows(data, key=key)
        except CorruptFile as reason:
            logger.warning(
                "dask_reservoir result cache: deleting the corrupt file %s (%s); its result will be computed again",
                self._shown(path),
                reason,
            )
            with contextlib.suppress(Exception):  # gone already, or read-only: it is a miss either way
                self.fs.rm_file(path)
            return None
        return rows, len(data)

    def _probe_path(self, token: str) -> str:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"a probe token is 32 hexadecimal digits, got {token!r}")
        return f"{self.root.rstrip('/')}/.probe-{token}"

    def write_probe(self) -> str:
        """Write a probe file ``<root>/.probe-<token>`` holding a new token; the token.

        The client writes it and asks the workers whether they see it
        (:meth:`sees_probe`), so that a directory that is not shared is found
        before results are kept where the other machines cannot read them.

        Examples
        --------
        >>> files = CacheFiles("memory://dask-reservoir-probe-doctest")
        >>> token = files.write_probe()
        >>> CacheFiles("memory://dask-reservoir-probe-doctest").sees_probe(token)
        True
        >>> files.remove_probe(token)
        >>> files.sees_probe(token)
        False
        """
        token = uuid.uuid4().hex
        self._put(self._probe_path(token), token.encode())
        return token

    def sees_probe(self, token: str) -> bool:
        """Whether the probe file of ``token`` is here, holding ``token``.

        A missing file is False; other errors of the filesystem are raised.
        """
        try:
            return bool(self.fs.cat_file(self._probe_path(token)) == token.encode())
        except FileNotFoundError:
            return False

    def remove_probe(self, token: str) -> None:
        """Delete the probe file of ``token``, if it is still there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._probe_path(token))
