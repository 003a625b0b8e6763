"""Read the files of one commit, for training code: from the site's ready cache, else the lake.

Strategy. Opening a reader resolves the ref once (a reader of ``xray@latest``
keeps reading the commit that was latest when it opened) and opens the
commit's manifest index; every listing and lookup is a query in that index,
so no object-store listing is ever needed. Then it looks for a ready cache of
the commit on a volume this machine mounts (of ``site``, when given) that
covers the paths asked for, and takes a lease on it, renewed by a thread
while the reader lives: such a cache is never evicted under a training run.

- From a cache, bytes are the cache's plain files (verified when the cache
  was filled, and sealed read-only), read with ``open()``: nothing between
  the training code and the filesystem.
- From the lake ("stream"), blobs are located in the catalog (one batched
  query per chunk of files), neighbours in a pack merged into one ranged GET
  (:func:`lakecache.data.materialize.plan_ranges`), several GETs ahead of the
  reader in manifest order, and every blob's BLAKE3 checked before its bytes
  are returned.

Processes. A reader is picklable and survives ``fork``: DataLoader workers
(fork or spawn) and the ranks of a distributed job get a copy that reopens
the index, the catalog and the lake lazily in their own process, never using
the parent's connections. Only the process that opened the reader holds the
lease; the copies read under it, so the parent (the training loop) must keep
the reader alive while its workers run, which a DataLoader does.

Thread-safety: reads may come from many threads (fsspec); the lazily opened
state is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import blake3

from lakecache.data.materialize import Range, RangeBuffers, plan_ranges
from lakecache.errors import (
    ConflictError,
    IntegrityError,
    LakecacheError,
    NotFoundError,
    ObjectNotFoundError,
    UserError,
)
from lakecache.integrations.reads import ReadCounters, ReadRecord, ReadSource, announce
from lakecache.lake.base import read_into
from lakecache.lake.objects import BlobLocation, ManifestEntry, normalize_folder

if TYPE_CHECKING:
    from lakecache.cache.service import CacheService
    from lakecache.catalog.topology import CacheRecord, TopologyStore
    from lakecache.data.hub import Hub
    from lakecache.data.index import FolderItem, ManifestIndex
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.reader")

#: Files per catalog lookup and per unit of read-ahead when streaming from the lake.
CHUNK_FILES = 256
#: A chunk also ends at this many bytes, so read-ahead memory stays bounded.
CHUNK_BYTES = 32 << 20
#: Chunks fetched ahead of the one being read.
CHUNKS_AHEAD = 2
#: When streaming, the first GET is cut to this many bytes and each next one to
#: twice as many, up to RAMP_LAST_BYTES: the first files arrive after a small GET,
#: not after a whole merged range shared with the GETs running ahead.
RAMP_FIRST_BYTES = 256 << 10
RAMP_LAST_BYTES = 4 << 20
#: Bytes of verified blobs kept in memory for the reads that follow (ranges of one
#: file, the neighbours fetched ahead).
KEPT_BYTES = 64 << 20
#: Files after the one asked for, in its folder, fetched in the same GET when they
#: are its neighbours in a pack (``read_ahead`` of fsspec's reader).
READ_AHEAD_FILES = 32
#: A blob larger than this is spilled to a temporary file for ranged reads.
SPILL_OVER = 16 << 20


@dataclass(frozen=True)
class CacheHit:
    """The ready cache a reader reads from."""

    cache_id: int
    volume: str
    site: str
    #: The folder holding the commit's files at their own paths.
    root: str


class _Lease:
    """A lease on a cache, renewed by a daemon thread until :meth:`release`.

    Lives only in the process that took it: copies of a reader in other
    processes carry no lease and never release this one.
    """

    def __init__(self, topology: TopologyStore, lease_id: int, ttl: timedelta) -> None:
        self.topology = topology
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost: LakecacheError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"lakecache-lease-{lease_id}", daemon=True
        )
        self._thread.start()

    def _renew(self) -> None:
        from lakecache.cache.clock import SystemClock

        clock = SystemClock()
        every = max(self.ttl.total_seconds() / 3, 0.05)
        while not self._stop.wait(every):
            now = clock.now()
            try:
                self.topology.renew_lease(self.lease_id, now=now, expires_at=now + self.ttl)
            except (ConflictError, NotFoundError) as exc:
                # Lapsed and evicted: reads of the cache now fail, naming the file.
                self.lost = exc
                log.error("lease %s on a cache was lost: %s", self.lease_id, exc.message)
                return
            except LakecacheError as exc:
                # The catalog or server blinked: two more tries fit in the lease's TTL.
                log.info("renewing lease %s failed: %s", self.lease_id, exc.message)

    def release(self) -> None:
        """Stop renewing and give the lease back (idempotent; an error is logged, not raised).

        Called from ``close()`` and from a finalizer at garbage collection or
        exit, where raising would only print a traceback nobody can act on.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        from lakecache.cache.clock import SystemClock

        try:
            self.topology.release_lease(self.lease_id, now=SystemClock().now())
        except LakecacheError as exc:
            log.warning("releasing lease %s: %s", self.lease_id, exc.message)


def _release_in_owner(lease: _Lease, owner_pid: int, close_hub: Callable[[], None] | None) -> None:
    # A forked child inherits the finalizer too: only the owner gives the lease back.
    if os.getpid() != owner_pid:
        return
    lease.release()
    if close_hub is not None:
        close_hub()


class CommitReader:
    """The files of one commit: listings from its manifest, bytes from a cache or the lake.

    Args:
        ref: ``DATASET@REF`` (``xray@v3``, ``xray@latest``, ``xray@<commit prefix>``).
        paths: folders or files the caller will read (all by default); a cache
            of only those paths (``cache add --path``) then counts as a hit.
        site: look for a ready cache only on this site's volumes (by default:
            on every volume this machine mounts).
        cached: ``None`` (default): the cache when one is ready, else the lake;
            ``True``: a ready cache or :class:`NotFoundError`; ``False``: the lake.
        settings, hub: where the lake and catalog are (default:
            :meth:`lakecache.Settings.load`); a given hub stays the caller's to close.
        lease_ttl: how long the lease outlives a reader whose process died.
        read_ahead: from the lake, a file read alone brings up to this many of the
            files after it in its folder, when they are its neighbours in a pack
            (one GET; they are kept, verified, for the reads that follow). 0 for
            random access, where they would be fetched for nothing.

    Raises:
        NotFoundError: the dataset, the ref or a path does not exist, or
            ``cached=True`` and no ready cache holds the commit here.

    Close it (or use it as a context manager) to release the lease at once;
    otherwise it is released when the reader is garbage-collected or the
    process exits, and lapses after ``lease_ttl`` if the process is killed.
    """

    def __init__(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None = None,
        site: str | None = None,
        cached: bool | None = None,
        settings: Settings | None = None,
        hub: Hub | None = None,
        lease_ttl: timedelta = timedelta(seconds=60),
        read_ahead: int = 0,
    ) -> None:
        from lakecache.data.dataset import split_ref
        from lakecache.data.hub import Hub as _Hub

        name, at = split_ref(ref)
        own = hub is None
        if hub is None:
            if settings is None:
                from lakecache.settings import Settings as _Settings

                settings = _Settings.load()
            hub = _Hub(settings)
        self.settings: Settings = hub.settings
        self.dataset = name
        self.prefixes = tuple(sorted({normalize_folder(p) for p in paths})) if paths else ("",)
        self.read_ahead = read_ahead
        self._kept_bytes = 0
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._hub: Hub | None = hub
        self._own_hub = own
        self._index: ManifestIndex | None = None
        self._locations: dict[str, BlobLocation] = {}
        self._blobs: OrderedDict[str, bytes | str] = OrderedDict()
        self._spill_dir: tempfile.TemporaryDirectory[str] | None = None
        self._lease: _Lease | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.counters = ReadCounters()
        try:
            self.remote = hub.server is not None
            self.commit_id = hub.catalog.resolve(name, at)
            self.manifest = hub.catalog.get_commit(name, self.commit_id).manifest
            self._index = self._open_index()
            self.cache: CacheHit | None = None
            if cached is not False:
                self.cache = self._hold_ready_cache(site, lease_ttl)
                if self.cache is None and cached:
                    where = f"site {site!r}" if site else "a volume this machine mounts"
                    raise NotFoundError(
                        f"no ready cache of {name}@{self.commit_id[:12]} on {where}",
                        hint=f"Fill one with `lakecache cache add {name}@{self.commit_id[:12]} "
                        "--site SITE`, or read from the lake with cached=False.",
                    )
        except BaseException:
            self.close()
            raise
        close_hub = hub.close if own else None
        if self._lease is not None:
            self._finalizer = weakref.finalize(
                self, _release_in_owner, self._lease, self._pid, close_hub
            )

    # -- what it is ------------------------------------------------------------------------

    @property
    def source(self) -> ReadSource:
        """``cache`` (a leased ready cache) or ``stream`` (the lake's packs)."""
        return "cache" if self.cache is not None else "stream"

    def record(self, files: int, nbytes: int, reader: str) -> ReadRecord:
        """Tell tracking (:func:`lakecache.integrations.reads.subscribe`) what is read, and how."""
        hit = self.cache
        rec = ReadRecord(
            dataset=self.dataset,
            commit_id=self.commit_id,
            source=self.source,
            files=files,
            bytes=nbytes,
            cache_id=hit.cache_id if hit else None,
            volume=hit.volume if hit else None,
            site=hit.site if hit else None,
            reader=reader,
        )
        announce(rec)
        return rec

    def __repr__(self) -> str:
        return f"CommitReader({self.dataset}@{self.commit_id[:12]}, {self.source})"

    # -- processes -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # What a copy in another process needs; connections, the lease and its
        # thread stay with the owner.
        return {
            "settings": self.settings,
            "remote": self.remote,
            "dataset": self.dataset,
            "prefixes": self.prefixes,
            "commit_id": self.commit_id,
            "manifest": self.manifest,
            "cache": self.cache,
            "read_ahead": self.read_ahead,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self.remote = state["remote"]
        self.dataset = state["dataset"]
        self.prefixes = state["prefixes"]
        self.commit_id = state["commit_id"]
        self.manifest = state["manifest"]
        self.cache = state["cache"]
        self.read_ahead = state["read_ahead"]
        self._kept_bytes = 0
        self._lock = threading.RLock()
        self._pid = -1  # not the owner: everything is reopened here on first use
        self._hub = None
        self._own_hub = True
        self._index = None
        self._locations = {}
        self._blobs = OrderedDict()
        self._spill_dir = None
        self._lease = None
        self._finalizer = None
        self.counters = ReadCounters()

    def _here(self) -> None:
        """Forget state opened in another process (a fork's inheritance): reopen it here."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # Dropped, not closed: the parent still uses these sockets and files.
            self._hub = None
            self._index = None
            self._blobs = OrderedDict()
            self._kept_bytes = 0
            self._spill_dir = None
            self._lease = None
            self._finalizer = None
            self._own_hub = True
            self.counters = ReadCounters()
            self._pid = os.getpid()

    @property
    def hub(self) -> Hub:
        """This process's hub (opened here on first use in a worker process)."""
        self._here()
        with self._lock:
            if self._hub is None:
                from lakecache.data.hub import Hub as _Hub

                self._hub = _Hub(self.settings, remote=self.remote)
                if self.remote:
                    # Through a server every lake request names the datasets it is for.
                    server = self._hub.server
                    assert server is not None
                    server.touch(self.dataset)
            return self._hub

    @property
    def index(self) -> ManifestIndex:
        """This process's view of the commit's manifest index."""
        self._here()
        with self._lock:
            if self._index is None:
                self._index = self._open_index()
            return self._index

    def _open_index(self) -> ManifestIndex:
        from lakecache.data.index import ManifestIndex

        return ManifestIndex.open(self.settings.state_dir, self.manifest, lambda: self.hub.lake)

    # -- the cache -------------------------------------------------------------------------

    def _service(self) -> CacheService:
        from lakecache.cache.service import CacheService

        return CacheService(self.hub)

    def _hold_ready_cache(self, site: str | None, ttl: timedelta) -> CacheHit | None:
        """Lease a ready cache of this commit that covers the prefixes, on a volume mounted here."""
        from lakecache.cache.clock import SystemClock

        svc = self._service()
        topology = svc.topology
        mounted = {v.name: v for v in topology.list_volumes(site) if os.path.isdir(v.root)}
        if not mounted:
            return None
        candidates: list[CacheRecord] = [
            c
            for c in topology.list_caches(dataset=self.dataset, states=("ready",))
            if c.commit_id == self.commit_id
            and c.volume in mounted
            and all(_covers(c.subpath, p) for p in self.prefixes)
        ]
        # A whole-commit cache first, then the one with the most room for hard links.
        candidates.sort(key=lambda c: (c.subpath != "", c.id))
        holder = f"reader {socket.gethostname()}:{os.getpid()}"
        clock = SystemClock()
        for c in candidates:
            now = clock.now()
            try:
                lease_id = topology.add_lease(c.id, holder, now=now, expires_at=now + ttl)
            except UserError:
                continue  # evicted since it was listed
            lease = _Lease(topology, lease_id, ttl)
            root = svc.cache_path(c)
            if not root.is_dir():
                lease.release()
                continue
            self._lease = lease
            return CacheHit(c.id, c.volume, c.site, str(root))
        return None

    # -- listings --------------------------------------------------------------------------

    def entry(self, path: str) -> ManifestEntry:
        """The file at ``path``; NotFoundError if the commit has none there."""
        e = self.index.get(path)
        if e is None:
            raise NotFoundError(
                f"no file {path!r} in {self.dataset}@{self.commit_id[:12]}",
                hint=f"List the folder with `lakecache data ls {self.dataset}@"
                f"{self.commit_id[:12]} {path.rpartition('/')[0]}`.",
            )
        return e

    def entries(self, paths: Iterable[str] | None = None) -> Iterator[ManifestEntry]:
        """Files in manifest (path) order: all, or those under each of ``paths``."""
        prefixes = [normalize_folder(p) for p in paths] if paths is not None else None
        if prefixes is not None and "" in prefixes:
            prefixes = None
        return self.index.entries(prefixes)

    def ls(self, folder: str = "") -> list[FolderItem]:
        """One folder: sub-folders (with totals), then files."""
        return self.index.ls(normalize_folder(folder))

    def folder_totals(self, folder: str) -> tuple[int, int] | None:
        """(files, bytes) under ``folder``, or None if it is not a folder."""
        return self.index.folder_totals(normalize_folder(folder))

    # -- bytes -----------------------------------------------------------------------------

    def local_path(self, entry: ManifestEntry) -> str | None:
        """The file's path on the leased cache, or None when reading from the lake."""
        if self.cache is None:
            return None
        return self.cache.root + "/" + entry.path

    def read(self, entry: ManifestEntry) -> bytes:
        """The whole file; from the cache as it is, from the lake verified."""
        # The hot path of a map-style dataset on a cache: as few calls as a plain
        # open().read() (the target is at least 90% of its speed).
        if self._pid != os.getpid():
            self._here()
        cache = self.cache
        if cache is not None:
            try:
                data = read_file(cache.root + "/" + entry.path, entry.size)
            except FileNotFoundError as exc:
                raise self.cache_lost(entry) from exc
        else:
            data = self._blob(entry)
        self.counters.add(len(data))
        return data

    def read_range(self, entry: ManifestEntry, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file (clipped to its size).

        From the lake the whole blob is fetched and verified first (a blob's
        hash covers all of it): a packed one is kept in memory, a large one in
        a temporary file, so the next ranges of the same file cost nothing.
        """
        self._here()
        start, end = max(0, start), min(end, entry.size)
        if end <= start:
            return b""
        local = self.local_path(entry)
        if local is not None:
            try:
                with open(local, "rb") as f:
                    f.seek(start)
                    data = f.read(end - start)
            except FileNotFoundError as exc:
                raise self.cache_lost(entry) from exc
        else:
            kept = self._kept_blob(entry)
            if isinstance(kept, bytes):
                data = kept[start:end]
            else:
                with open(kept, "rb") as f:
                    f.seek(start)
                    data = f.read(end - start)
        self.counters.add(len(data), files=0)
        return data

    def read_many(
        self, entries: Iterable[ManifestEntry], *, ahead: int = CHUNKS_AHEAD
    ) -> Iterator[tuple[ManifestEntry, bytes]]:
        """Every entry's bytes, in the order given, with reads running ahead.

        From the lake, files are taken in chunks (one catalog lookup each),
        neighbours in a pack merged into one ranged GET, up to ``ahead`` chunks
        in flight; memory stays bounded by about ``(ahead + 1) * CHUNK_BYTES``.
        From a cache, files are read ahead by a few threads (a round trip each
        on NFS). Stopping early (``close()`` on the iterator) cancels what is
        queued.
        """
        self._here()
        if self.cache is not None:
            yield from self._read_many_local(entries)
            return
        with ThreadPoolExecutor(
            max(1, self.settings.workers), thread_name_prefix="lakecache-stream"
        ) as pool:
            window: deque[tuple[list[ManifestEntry], dict[str, Future[bytes]]]] = deque()
            # The lake's client is made (a few tenths of a second of CPU for S3) while
            # the first chunk's blobs are located, not after.
            requests: list[Future[Any]] = [pool.submit(lambda: self.hub.lake)]
            buffers = RangeBuffers()
            ramp = [RAMP_FIRST_BYTES]
            try:
                for chunk in _chunks(entries):
                    window.append((chunk, self._submit_chunk(pool, chunk, requests, buffers, ramp)))
                    if len(window) > ahead:
                        yield from self._drain(*window.popleft())
                        requests = [f for f in requests if not f.done()]
                while window:
                    yield from self._drain(*window.popleft())
            finally:
                # Cancelling a GET also cancels the blobs cut from it.
                for fut in requests:
                    fut.cancel()

    def _drain(
        self, chunk: list[ManifestEntry], futures: dict[str, Future[bytes]]
    ) -> Iterator[tuple[ManifestEntry, bytes]]:
        for e in chunk:
            data = futures[e.digest].result()
            self.counters.add(len(data))
            yield e, data

    def _submit_chunk(
        self,
        pool: ThreadPoolExecutor,
        chunk: list[ManifestEntry],
        requests: list[Future[Any]],
        buffers: RangeBuffers,
        ramp: list[int],
    ) -> dict[str, Future[bytes]]:
        """Start the GETs of one chunk; a future of verified bytes for each of its digests.

        ``ramp`` holds the size the next GET is cut to (doubled after each), so the
        first files come in small GETs that do not wait for whole merged ranges;
        0 once it has grown past them.
        """
        by_digest = {e.digest: e for e in chunk}
        locs = self._locate(by_digest.values())
        futures: dict[str, Future[bytes]] = {}
        for merged in plan_ranges(loc for loc in locs.values() if loc.pack_id):
            for r in _ramped(merged, ramp):
                whole = pool.submit(self._get_blobs, r, by_digest, buffers)
                requests.append(whole)
                for digest, _, _ in r.blobs:
                    futures[digest] = _slice(whole, digest)
        for loc in locs.values():
            if not loc.pack_id:
                large = pool.submit(self._fetch_large, by_digest[loc.digest], loc)
                requests.append(large)
                futures[loc.digest] = large
        return futures

    def _read_many_local(
        self, entries: Iterable[ManifestEntry]
    ) -> Iterator[tuple[ManifestEntry, bytes]]:
        threads = min(4, max(1, self.settings.workers))
        with ThreadPoolExecutor(threads, thread_name_prefix="lakecache-cache-read") as pool:
            window: deque[tuple[ManifestEntry, Future[bytes]]] = deque()
            try:
                for e in entries:
                    local = self.cache.root + "/" + e.path if self.cache else ""
                    window.append((e, pool.submit(self._read_local, local, e)))
                    if len(window) > 4 * threads:
                        done, fut = window.popleft()
                        data = fut.result()
                        self.counters.add(len(data))
                        yield done, data
                while window:
                    done, fut = window.popleft()
                    data = fut.result()
                    self.counters.add(len(data))
                    yield done, data
            finally:
                for _, fut in window:
                    fut.cancel()

    def _read_local(self, local: str, entry: ManifestEntry) -> bytes:
        try:
            return read_file(local, entry.size)
        except FileNotFoundError as exc:
            raise self.cache_lost(entry) from exc

    def cache_lost(self, entry: ManifestEntry) -> NotFoundError:
        """The error for a file the leased cache should hold and does not."""
        hit = self.cache
        assert hit is not None
        return NotFoundError(
            f"{entry.path!r} is missing from cache {hit.cache_id} of "
            f"{self.dataset}@{self.commit_id[:12]} at {hit.root}",
            hint=f"Check the cache with `lakecache cache verify {self.dataset}@"
            f"{self.commit_id[:12]} --repair`, or read from the lake with cached=False.",
        )

    # -- the lake --------------------------------------------------------------------------

    def _locate(self, entries: Iterable[ManifestEntry]) -> dict[str, BlobLocation]:
        wanted = {e.digest: e for e in entries}
        with self._lock:
            known = {d: self._locations[d] for d in wanted if d in self._locations}
        missing = [d for d in wanted if d not in known]
        if missing:
            found = self.hub.catalog.locate_blobs(missing)
            lost = [d for d in missing if d not in found]
            if lost:
                e = wanted[lost[0]]
                raise IntegrityError(
                    f"{e.path!r} cannot be read: its blob {lost[0][:16]} is not in the lake's "
                    f"index ({len(lost)} blob(s) missing)"
                )
            known.update(found)
        return known

    def locate_all(self, entries: Iterable[ManifestEntry]) -> None:
        """Look up where every entry's blob is, in batches, ahead of random reads."""
        chunk: list[ManifestEntry] = []
        for e in entries:
            chunk.append(e)
            if len(chunk) >= 4096:
                self._remember(self._locate(chunk))
                chunk = []
        if chunk:
            self._remember(self._locate(chunk))

    def _remember(self, locs: dict[str, BlobLocation]) -> None:
        with self._lock:
            self._locations.update(locs)

    def _get(self, entry: ManifestEntry, key: str, start: int, length: int) -> memoryview:
        try:
            return memoryview(self.hub.lake.get(key, start, length))
        except ObjectNotFoundError as exc:
            raise ObjectNotFoundError(
                f"{entry.path!r} cannot be read: lake object {key} is missing or short "
                f"({exc.message})"
            ) from exc

    def _get_blobs(
        self, r: Range, by_digest: dict[str, ManifestEntry], buffers: RangeBuffers
    ) -> dict[str, bytes | IntegrityError]:
        """One ranged GET into the thread's buffer, cut into its blobs' verified bytes.

        The buffer is this worker's for its next range: each blob is copied out
        (the caller keeps it) once its hash matches; a blob that does not match
        gets its error instead, raised only when that file is read.
        """
        data = buffers.get(r.length)
        first = by_digest[r.blobs[0][0]]
        try:
            read_into(self.hub.lake, r.key, r.start, data)
        except ObjectNotFoundError as exc:
            raise ObjectNotFoundError(
                f"{first.path!r} cannot be read: lake object {r.key} is missing or short "
                f"({exc.message})"
            ) from exc
        out: dict[str, bytes | IntegrityError] = {}
        for digest, off, n in r.blobs:
            try:
                blob = data[off : off + n]
                out[digest] = _verified(by_digest[digest], r.key, r.start + off, blob)
            except IntegrityError as err:
                out[digest] = err
        return out

    def _fetch_large(self, entry: ManifestEntry, loc: BlobLocation) -> bytes:
        return _verified(entry, loc.key, 0, self._get(entry, loc.key, 0, loc.size))

    def _blob(self, entry: ManifestEntry) -> bytes:
        """One file's verified bytes from the lake (one ranged GET of its pack)."""
        kept = self._kept_blob(entry, spill=False)
        assert isinstance(kept, bytes)
        return kept

    def _kept_blob(self, entry: ManifestEntry, *, spill: bool = True) -> bytes | str:
        """A verified blob: its bytes, or (large, ``spill``) a temporary file holding them."""
        with self._lock:
            kept = self._blobs.get(entry.digest)
            if kept is not None:
                self._blobs.move_to_end(entry.digest)
                return kept
        loc = self._locate([entry])[entry.digest]
        if loc.size > SPILL_OVER:
            if not spill:  # a whole-file read: the caller holds the bytes, nobody else
                whole = self._get(entry, loc.key, loc.offset, loc.size)
                return _verified(entry, loc.key, loc.offset, whole)
            path = self._spill(entry, loc)
            self._keep(entry.digest, path, 0)
            return path
        if loc.pack_id and self.read_ahead > 0:
            return self._fetch_with_neighbours(entry, loc)
        data = _verified(
            entry, loc.key, loc.offset, self._get(entry, loc.key, loc.offset, loc.size)
        )
        self._keep(entry.digest, data, len(data))
        return data

    def _fetch_with_neighbours(self, entry: ManifestEntry, loc: BlobLocation) -> bytes:
        """The blob, and in the same GET the next files of its folder lying near it in its pack.

        A neighbour whose bytes do not verify is not kept: reading it later
        fetches it alone and fails then, naming it.
        """
        folder, _, name = entry.path.rpartition("/")
        items, _ = self.index.ls_page(folder, limit=self.read_ahead, after=("f", name))
        with self._lock:
            near = {
                i.digest: ManifestEntry(i.path, i.digest, i.size)
                for i in items
                if not i.is_dir
                and i.digest
                and i.size <= SPILL_OVER
                and i.digest not in self._blobs
            }
        near.pop(entry.digest, None)
        locs = self._locate(near.values()) if near else {}
        same_pack = [x for x in locs.values() if x.pack_id == loc.pack_id]
        by_digest = {**near, entry.digest: entry}
        for r in plan_ranges([loc, *same_pack]):
            if all(digest != entry.digest for digest, _, _ in r.blobs):
                continue
            data = self._get(entry, r.key, r.start, r.length)
            out = b""
            for digest, off, n in r.blobs:
                e = by_digest[digest]
                try:
                    blob = _verified(e, r.key, r.start + off, data[off : off + n])
                except IntegrityError:
                    if digest == entry.digest:
                        raise
                    continue
                self._keep(digest, blob, n)
                if digest == entry.digest:
                    out = blob
            return out
        raise AssertionError("plan_ranges lost the blob asked for")

    def _keep(self, digest: str, value: bytes | str, nbytes: int) -> None:
        """Keep a verified blob (bytes, or a spilled file's path), least recently used out."""
        with self._lock:
            before = self._blobs.pop(digest, None)  # two threads fetched it at once
            if isinstance(before, bytes):
                self._kept_bytes -= len(before)
            self._blobs[digest] = value
            self._kept_bytes += nbytes
            # The newest stays, whatever its size: it is the one being read.
            while len(self._blobs) > 1 and (
                self._kept_bytes > KEPT_BYTES or len(self._blobs) > 4096
            ):
                _, old = self._blobs.popitem(last=False)
                if isinstance(old, str):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(old)
                else:
                    self._kept_bytes -= len(old)

    def _spill(self, entry: ManifestEntry, loc: BlobLocation) -> str:
        with self._lock:
            if self._spill_dir is None:
                self._spill_dir = tempfile.TemporaryDirectory(prefix="lakecache-read-")
            folder = self._spill_dir.name
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        fd, tmp = tempfile.mkstemp(dir=folder)
        size = 0
        try:
            with open(fd, "wb") as f:
                for c in self.hub.lake.iter_chunks(loc.key, loc.offset, loc.size):
                    h.update(c)
                    size += len(c)
                    f.write(c)
        except ObjectNotFoundError as exc:
            os.unlink(tmp)
            raise ObjectNotFoundError(
                f"{entry.path!r} cannot be read: lake object {loc.key} is missing ({exc.message})"
            ) from exc
        if size != loc.size or h.hexdigest() != entry.digest:
            os.unlink(tmp)
            raise _damaged(entry, loc.key, loc.offset)
        return tmp

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the lease on the cache, and close what this reader opened. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # releases the lease (in the owner) and closes an own hub
            self._finalizer = None
        elif self._lease is not None and self._pid == os.getpid():
            self._lease.release()
        self._lease = None
        with self._lock:
            if self._index is not None and self._pid == os.getpid():
                self._index.close()
            self._index = None
            if self._spill_dir is not None and self._pid == os.getpid():
                self._spill_dir.cleanup()
            self._spill_dir = None
            self._blobs.clear()
            self._kept_bytes = 0
            if self._hub is not None and self._own_hub and self._pid == os.getpid():
                self._hub.close()
            self._hub = None

    def __enter__(self) -> CommitReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_file(path: str, size: int) -> bytes:
    """The whole file at ``path``, which should hold ``size`` bytes.

    One open, one read and one close: asking for one byte more than ``size``
    and getting ``size`` means the end was reached, so the extra read of an
    empty end (and the fstat and lseek calls of ``open().read()``, and its
    buffered file object) are not needed. A file of another size is read to
    its end all the same, as ``open().read()`` would.
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        parts = [data]
        while chunk := os.read(fd, max(size, 1 << 16)):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _covers(subpath: str, prefix: str) -> bool:
    """True if a cache of ``subpath`` holds every file under ``prefix``."""
    return not subpath or prefix == subpath or prefix.startswith(subpath + "/")


def _ramped(r: Range, ramp: list[int]) -> Iterator[Range]:
    """``r`` cut at blob boundaries into GETs of ``ramp[0]`` bytes, doubling each time
    (a GET holds one blob at least), until a cut would be as large as ``r`` itself."""
    while ramp[0] and ramp[0] < r.length and len(r.blobs) > 1:
        cap, taken = ramp[0], 1
        while taken < len(r.blobs) and sum(r.blobs[taken][1:]) <= cap:
            taken += 1
        head = r.blobs[:taken]
        rest = r.blobs[taken:]
        if not rest:
            break
        yield Range(r.key, r.start, head[-1][1] + head[-1][2], head)
        shift = rest[0][1]
        r = Range(
            r.key,
            r.start + shift,
            r.length - shift,
            tuple((d, off - shift, n) for d, off, n in rest),
        )
        ramp[0] *= 2
    if ramp[0] and ramp[0] >= RAMP_LAST_BYTES:
        ramp[0] = 0
    yield r


def _chunks(entries: Iterable[ManifestEntry]) -> Iterator[list[ManifestEntry]]:
    chunk: list[ManifestEntry] = []
    nbytes = 0
    for e in entries:
        chunk.append(e)
        nbytes += e.size
        if len(chunk) >= CHUNK_FILES or nbytes >= CHUNK_BYTES:
            yield chunk
            chunk, nbytes = [], 0
    if chunk:
        yield chunk


def _damaged(entry: ManifestEntry, key: str, offset: int) -> IntegrityError:
    return IntegrityError(
        f"{entry.path!r}: bytes at {key} offset {offset} do not match its digest "
        f"{entry.digest[:16]}; the lake object is damaged"
    )


def _verified(entry: ManifestEntry, key: str, offset: int, data: memoryview) -> bytes:
    if len(data) != entry.size or blake3.blake3(data).hexdigest() != entry.digest:
        raise _damaged(entry, key, offset)
    return bytes(data)


def _slice(whole: Future[dict[str, bytes | IntegrityError]], digest: str) -> Future[bytes]:
    """A future of one blob's verified bytes, taken from the future of its merged range."""
    out: Future[bytes] = Future()

    def done(f: Future[dict[str, bytes | IntegrityError]]) -> None:
        if f.cancelled():
            out.cancel()
            return
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        blob = f.result()[digest]
        if isinstance(blob, IntegrityError):
            out.set_exception(blob)
        else:
            out.set_result(blob)

    whole.add_done_callback(done)
    return out
