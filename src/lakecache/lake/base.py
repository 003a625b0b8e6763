"""The lake's backend contract: a small, batch-first object store.

A backend stores immutable objects under string keys (``/``-separated, no
leading ``/``, no ``..``). Every backend passes the one contract suite in
``tests/lake/test_contract.py``. The lake never knows about datasets or the
catalog: the layout of keys is described in :mod:`lakecache.lake.objects`.

Errors: a missing key raises :class:`~lakecache.errors.ObjectNotFoundError`;
an unreachable store raises :class:`~lakecache.errors.LakeUnreachableError`
after the backend's own retries with backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from lakecache.errors import InvalidPathError


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key, its size and when it was last written (UTC).

    ``modified`` is the store's own clock (S3 ``LastModified``, a file's
    mtime); garbage collection never deletes an object younger than its grace
    period by it. None only from a backend that cannot tell.
    """

    key: str
    size: int
    modified: datetime | None = None


@runtime_checkable
class Lake(Protocol):
    """An object store. Implementations must be safe to call from many threads."""

    #: Where the lake is, for messages. Never contains credentials.
    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (readers see all or nothing)."""

    def put_file(self, key: str, fileobj: BinaryIO, size: int) -> None:
        """Stream ``size`` bytes from ``fileobj`` to ``key``; large objects go multipart.

        Memory stays bounded by the part size, whatever ``size`` is.
        """

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or ``length`` bytes from ``start`` (a ranged GET)."""

    def iter_chunks(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Stream the object (or a range of it) in chunks, for objects too big for memory."""

    def exists(self, keys: Iterable[str]) -> set[str]:
        """Return the subset of ``keys`` that exist. Batched: one call for many keys."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order, with its
        size and last-modified time (rewriting a key makes it young again)."""

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the keys that exist; missing keys are not an error."""

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Drop what writers killed midway left behind, once older than ``older_than``.

        S3: multipart uploads never completed nor aborted (their parts cost
        storage and are invisible to listings). A folder: temporary files.
        Uploads younger than ``older_than`` may still be running and are kept.
        Returns how many were dropped.
        """


def check_key(key: str) -> str:
    """Refuse keys that could escape a prefix or a folder: absolute, ``..``, empty parts, NUL."""
    if (
        not key
        or key.startswith("/")
        or "\x00" in key
        or "\\" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise InvalidPathError(f"invalid lake key {key!r}")
    return key


def local_path(root: Path, key: str) -> Path:
    """Map a checked key to a path under ``root``."""
    return root.joinpath(*check_key(key).split("/"))


def read_into(lake: Lake, key: str, start: int, buf: memoryview) -> None:
    """Fill ``buf`` with the ``len(buf)`` bytes of ``key`` from ``start`` (one ranged GET).

    A backend with ``get_into`` reads straight into ``buf``, so a caller that
    reuses one buffer for many ranges costs no allocation, page faults or copy
    per range; any other backend's :meth:`Lake.get` is copied in. Raises
    :class:`~lakecache.errors.ObjectNotFoundError` when the object is shorter.
    """
    get_into = getattr(lake, "get_into", None)
    if get_into is not None:
        get_into(key, start, buf)
        return
    data = lake.get(key, start, len(buf))
    buf[: len(data)] = data
