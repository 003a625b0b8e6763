"""What the API looks up on most requests, kept in memory where that is safe.

A commit never changes: once a request has read commit ``C`` of a dataset from the
catalog, later requests naming ``C`` by its full id take it from here instead of
three more queries. The key holds the dataset's identity (id and creation time),
not only its name, so a dataset deleted and created again under the same name never
answers with a commit of the old one. Who may read the dataset is checked on every
request before this cache is asked. Tags, ``latest`` and id prefixes are always
resolved by the catalog (tags move, a prefix can become ambiguous).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from lakecache.catalog.db import DatasetRecord
from lakecache.lake.objects import Commit

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Commits kept per server process: a few hundred bytes each.
COMMIT_CACHE_SIZE = 4096
_FULL_ID_LENGTH = 64
_HEX = frozenset("0123456789abcdef")


class BoundedCache(Generic[K, V]):
    """The ``size`` most recently used entries; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


CommitKey = tuple[int, datetime, str]


def commit_at(plane: ControlPlane, dataset: DatasetRecord, ref: str) -> tuple[str, Commit]:
    """The full id and the commit that ``ref`` names in ``dataset`` (the caller checked
    the caller's role). NotFoundError or AmbiguousRefError as :meth:`Catalog.resolve`."""
    catalog = plane.hub.catalog
    if _is_full_id(ref):
        cached = plane.commits.get((dataset.id, dataset.created_at, ref))
        if cached is not None:
            return ref, cached
    commit_id = catalog.resolve(dataset.name, ref)
    key = (dataset.id, dataset.created_at, commit_id)
    commit = plane.commits.get(key)
    if commit is None:
        commit = catalog.get_commit(dataset.name, commit_id)
        plane.commits.put(key, commit)
    return commit_id, commit


def _is_full_id(ref: str) -> bool:
    return len(ref) == _FULL_ID_LENGTH and set(ref) <= _HEX
