"""What the API looks up on most requests, kept in memory where that is safe.

**Credentials and roles, for a few seconds.** Who an API token or a session cookie
belongs to, and a person's role on a dataset, are kept for
:data:`CREDENTIAL_CACHE_SECONDS`, so that a client browsing a folder does not cost two
catalog queries per click. Every request is still checked against them (the session's
expiry and CSRF token included); only what was granted is kept, never a refusal, so a
new token, session or membership works at once. What takes rights away (a revoked
token, an ended session, a disabled or demoted user, a member removed, a dataset
deleted) applies at once on the replica that made the change, which forgets everything
it kept, and within :data:`CREDENTIAL_CACHE_SECONDS` on the other replicas (and for a
change made straight in the catalog, not through this server). Job tokens and site
agents' users are never kept: they are checked in the catalog on every request.

**Commits.** A commit never changes: once a request has read commit ``C`` of a dataset from the
catalog, later requests naming ``C`` by its full id take it from here instead of
three more queries. The key holds the dataset's identity (id and creation time),
not only its name, so a dataset deleted and created again under the same name never
answers with a commit of the old one. Who may read the dataset is checked on every
request before this cache is asked. Tags, ``latest`` and id prefixes are always
resolved by the catalog (tags move, a prefix can become ambiguous).

**Listing pages of a commit.** A folder's page in a commit can never change either, so
its JSON body is kept once made, with an ETag (a hash of the body), up to
:data:`PAGE_CACHE_BYTES` in all: the next client browsing that folder costs the rights
check and a copy, not a read of the index and a serialisation of a thousand entries.
The caller's rights and the ref are checked first on every request, as for commits.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from lakecache.catalog.db import DatasetRecord
from lakecache.lake.objects import Commit

if TYPE_CHECKING:
    from lakecache.server.auth import DatasetAccess, Principal
    from lakecache.server.runtime import ControlPlane

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Commits kept per server process: a few hundred bytes each.
COMMIT_CACHE_SIZE = 4096
#: How long a replica may go on accepting a credential, or a role on a dataset, that
#: another replica (or a change made straight in the catalog) took away.
CREDENTIAL_CACHE_SECONDS = 5.0
#: Credentials and (user, dataset) roles kept per server process.
CREDENTIAL_CACHE_SIZE = 10_000
#: Bytes of listing pages kept per server process (a page of 1,000 files is ~190 kB).
PAGE_CACHE_BYTES = 64 * 1024 * 1024
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


@dataclass(frozen=True)
class KeptPage:
    body: bytes
    #: A strong validator: the body's hash, quoted as HTTP wants it.
    etag: str


class PageCache:
    """Response bodies that never change, by key, each with its ETag; the least recently
    used go once the bodies pass ``budget`` bytes in all. Thread-safe."""

    def __init__(self, budget: int = PAGE_CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[Hashable, KeptPage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> KeptPage | None:
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None:
                self._entries.move_to_end(key)
            return kept

    def put(self, key: Hashable, body: bytes) -> KeptPage:
        kept = KeptPage(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')
        if len(body) > self.budget:
            return kept  # served, never kept: it would push out everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= len(old.body)
            self._entries[key] = kept
            self.used += len(body)
            while self.used > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self.used -= len(dropped.body)
        return kept

    def __len__(self) -> int:
        return len(self._entries)


def commit_at(plane: ControlPlane, dataset: DatasetRecord, ref: str) -> tuple[str, Commit]:
    """The full id and the commit that ``ref`` names in ``dataset`` (the caller checked
    the caller's role). NotFoundError or AmbiguousRefError as :meth:`Catalog.resolve`."""
    catalog = plane.hub.catalog
    cached = kept_commit(plane, dataset, ref)
    if cached is not None:
        return ref, cached
    commit_id = catalog.resolve(dataset.name, ref)
    key = (dataset.id, dataset.created_at, commit_id)
    commit = plane.commits.get(key)
    if commit is None:
        commit = catalog.get_commit(dataset.name, commit_id)
        plane.commits.put(key, commit)
    return commit_id, commit


def kept_commit(plane: ControlPlane, dataset: DatasetRecord, ref: str) -> Commit | None:
    """The commit a full id names in ``dataset``, if this server has read it; never blocks."""
    if not _is_full_id(ref):
        return None
    return plane.commits.get((dataset.id, dataset.created_at, ref))


def _is_full_id(ref: str) -> bool:
    return len(ref) == _FULL_ID_LENGTH and set(ref) <= _HEX


@dataclass(frozen=True)
class _Kept(Generic[V]):
    value: V
    #: time.monotonic() and the plane's clock when read from the catalog: both must be
    #: recent (a test's manual clock moved past an expiry makes the entry stale too).
    read_at: float
    read_clock: datetime
    #: How long this entry may be served: between half the cache's time and all of it, at
    #: random, so that entries read together (many clients that started together) do not
    #: all lapse, and all go back to the catalog, in the same instant.
    lasts: float
    #: A session's end: never served past it, however recent the read.
    expires_at: datetime | None
    generation: int


class CredentialCache:
    """Principals by credential and roles by (user id, dataset), each for ``ttl`` seconds
    (see the module's note). Thread-safe; bounded."""

    def __init__(self, ttl: float = CREDENTIAL_CACHE_SECONDS, size: int = CREDENTIAL_CACHE_SIZE):
        self.ttl = ttl
        self._principals: BoundedCache[str, _Kept[Principal]] = BoundedCache(size)
        self._access: BoundedCache[tuple[int, str], _Kept[DatasetAccess]] = BoundedCache(size)
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read it before asking the catalog; hand it to ``keep_*`` so that an answer read
        before a :meth:`forget_all` is not kept after it."""
        return self._generation

    def forget_all(self) -> None:
        """Drop everything kept (rights were taken away in this process)."""
        with self._lock:
            self._generation += 1
            self._principals.clear()
            self._access.clear()

    @staticmethod
    def credential_key(kind: str, secret: str) -> str:
        # The hash, not the secret, so that memory holds no usable token.
        return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()}"

    def principal(self, key: str, now: datetime) -> Principal | None:
        return self._fresh(self._principals.get(key), now)

    def keep_principal(
        self,
        key: str,
        principal: Principal,
        now: datetime,
        generation: int,
        expires_at: datetime | None = None,
    ) -> None:
        self._keep(self._principals, key, principal, now, generation, expires_at)

    def access(self, user_id: int, dataset: str, now: datetime) -> DatasetAccess | None:
        return self._fresh(self._access.get((user_id, dataset)), now)

    def keep_access(
        self, user_id: int, dataset: str, access: DatasetAccess, now: datetime, generation: int
    ) -> None:
        self._keep(self._access, (user_id, dataset), access, now, generation, None)

    def _fresh(self, kept: _Kept[V] | None, now: datetime) -> V | None:
        if self.ttl <= 0 or kept is None or kept.generation != self._generation:
            return None
        if time.monotonic() - kept.read_at >= kept.lasts:
            return None
        age = (now - kept.read_clock).total_seconds()
        if not 0 <= age < kept.lasts or (kept.expires_at is not None and now >= kept.expires_at):
            return None
        return kept.value

    def _keep(
        self,
        cache: BoundedCache[K, _Kept[V]],
        key: K,
        value: V,
        now: datetime,
        generation: int,
        expires_at: datetime | None,
    ) -> None:
        if self.ttl <= 0:
            return
        lasts = self.ttl * random.uniform(0.5, 1.0)
        kept = _Kept(value, time.monotonic(), now, lasts, expires_at, generation)
        with self._lock:
            if generation == self._generation:
                cache.put(key, kept)
