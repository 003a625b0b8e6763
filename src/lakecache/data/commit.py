"""Commit a folder: scan, hash in parallel, pack, upload in parallel, then publish.

Strategy. Reading, hashing and uploading overlap. Small files (at most
``pack_threshold`` bytes) are read once by a pool of readers, in chunks of a
few MiB; the coordinating thread asks the catalog, one batch per chunk, which
digests the lake already has (across all datasets) and appends only the new
blobs to the current pack; full packs are uploaded by a second pool. Large
files are hashed as a stream, then uploaded alone, multipart, from a reader
that re-hashes on the way: if the bytes changed since they were hashed the
upload is aborted before it completes, so a key never names the wrong bytes.

Memory is bounded: chunks in flight (readers) and packs in flight (uploads)
are capped, whatever the number or size of files.

Start-up. A re-commit of a folder that barely changed is mostly fixed costs,
so they overlap: the lake's client (boto3's import and set-up, about a third
of a second) is made in a thread (``Hub.open_lake_in_background``) while the
folder is scanned and the stat cache and the parent's manifest say which
files are unchanged; the new manifest's local index (the parent's, patched)
is written while the manifest goes to the lake. Unchanged files cost a stat
each: no read, and one catalog question for all of them (none when the
parent commit holds them at the same path).

Visibility. Packs are recorded in the catalog as soon as they are in the lake,
so a commit killed midway leaves reusable packs and no commit; re-running it
skips what is there. The manifest and the commit object go to the lake next,
and the commit becomes visible in one step: the catalog's compare-and-swap of
the branch head.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import blake3

from lakecache.data.index import ManifestIndex
from lakecache.data.memory import pin_mmap_threshold
from lakecache.data.progress import NullProgress, Progress
from lakecache.data.scan import SourceFile, scan_folder
from lakecache.data.statcache import StatCache
from lakecache.errors import ConflictError, SourceError
from lakecache.lake.objects import (
    BlobLocation,
    Commit,
    ManifestEntry,
    blob_key,
    commit_key,
    encode_manifest,
    encode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.lake import Lake
    from lakecache.settings import Settings

CHUNK_BYTES = 2 << 20
CHUNK_FILES = 256
#: Packs being uploaded at once, in bytes: with the reads in flight, this bounds memory.
PACK_BYTES_IN_FLIGHT = 128 << 20
MIN_PACK = 4 << 20
_ATTEMPTS = 3


@dataclass
class CommitStats:
    """What a commit did: how much it read, found in the lake already, and uploaded."""

    files: int = 0
    bytes: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    packs: int = 0
    seconds: float = 0.0
    commit_id: str = ""
    #: False when the folder matched the head exactly and no commit was made.
    created: bool = True
    extra: dict[str, float] = field(default_factory=dict)


def read_stable(f: SourceFile) -> tuple[SourceFile, bytes]:
    """Read a whole (small) file; re-read if it changes while read; return its fresh stat."""
    for _ in range(_ATTEMPTS):
        try:
            with open(f.abspath, "rb") as fh:
                st0 = os.fstat(fh.fileno())
                data = fh.read()
                st1 = os.fstat(fh.fileno())
        except OSError as exc:
            raise _unreadable(f, exc) from exc
        if st0.st_size == st1.st_size == len(data) and st0.st_mtime_ns == st1.st_mtime_ns:
            return _restat(f, st1), data
    raise _changing(f)


def hash_stable(f: SourceFile, chunk: int) -> tuple[SourceFile, str]:
    """Hash a large file as a stream; re-hash if it changes meanwhile."""
    for _ in range(_ATTEMPTS):
        try:
            with open(f.abspath, "rb") as fh:
                st0 = os.fstat(fh.fileno())
                h = blake3.blake3(max_threads=blake3.blake3.AUTO)
                n = 0
                while data := fh.read(chunk):
                    h.update(data)
                    n += len(data)
                st1 = os.fstat(fh.fileno())
        except OSError as exc:
            raise _unreadable(f, exc) from exc
        if st0.st_size == st1.st_size == n and st0.st_mtime_ns == st1.st_mtime_ns:
            return _restat(f, st1), h.hexdigest()
    raise _changing(f)


def _restat(f: SourceFile, st: os.stat_result) -> SourceFile:
    if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (f.size, f.mtime_ns, f.ctime_ns):
        return f
    return f._replace(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def _unreadable(f: SourceFile, exc: OSError) -> SourceError:
    return SourceError(
        f"cannot read {f.path!r}: {exc.strerror or exc}; nothing was committed",
        hint="Fix the file's permissions (or remove it from the folder) and commit again.",
    )


def _changing(f: SourceFile) -> SourceError:
    return SourceError(
        f"{f.path!r} kept changing while it was read; nothing was committed",
        hint="Wait until whatever writes it is done, then commit again.",
    )


class VerifyingReader:
    """Reads exactly ``size`` bytes of a file and fails before the last byte if they changed.

    Backends read a large blob's bytes through ``read``; raising before the
    final chunk is returned makes them abort the upload (multipart abort, temp
    file removed) instead of completing an object whose bytes disagree with its key.
    """

    def __init__(self, f: SourceFile, digest: str) -> None:
        self._f = f
        self._fh: BinaryIO = open(f.abspath, "rb")  # noqa: SIM115 - closed by close()
        self._h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self._left = f.size
        self._digest = digest

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._fh.read(n)
        self._h.update(data)
        self._left -= len(data)
        if len(data) < n or (self._left == 0 and self._h.hexdigest() != self._digest):
            raise _changing(self._f)
        return data

    def close(self) -> None:
        self._fh.close()


class _Pack:
    """Blobs collected for one pack object; joined once, in the upload thread."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.blobs: list[tuple[str, int, int]] = []

    def add(self, digest: str, data: bytes) -> None:
        self.blobs.append((digest, self.size, len(data)))
        self.parts.append(data)
        self.size += len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()  # one copy alive, not two
        return data


def commit_folder(
    *,
    lake: Lake | Callable[[], Lake],
    catalog: Catalog,
    settings: Settings,
    dataset: str,
    root: Path | str,
    message: str,
    progress: Progress | None = None,
    allow_empty: bool = False,
) -> tuple[Commit, CommitStats]:
    """Commit the folder ``root`` as the new head of ``dataset``.

    A folder whose files are exactly the head's makes no new commit unless
    ``allow_empty``: the head is returned and ``stats.created`` is False.
    ``lake`` may be a function that returns it, called only once the lake is
    needed (:meth:`Hub.open_lake_in_background` makes that wait short).

    Raises :class:`SourceError` (a file unreadable or changing; nothing
    committed), :class:`InvalidPathError` (a name the manifest cannot hold),
    :class:`ConflictError` (someone committed first; the uploaded packs stay
    and a re-run reuses them), and lake/catalog errors. Thread-safe callers may
    run several commits of different datasets at once.
    """
    progress = progress or NullProgress()
    pin_mmap_threshold()
    t0 = time.perf_counter()
    get_lake: Callable[[], Lake] = lake if callable(lake) else (lambda: lake)
    catalog.get_dataset(dataset)
    parent = catalog.head(dataset)
    files = scan_folder(root)
    stats = CommitStats(files=len(files))
    stats.extra["scan_s"] = time.perf_counter() - t0

    statcache = StatCache(settings.state_dir / "statcache.db")
    parent_index = None
    parent_manifest = None
    if parent:
        parent_manifest = catalog.get_commit(dataset, parent).manifest
        if ManifestIndex.location(settings.state_dir, parent_manifest).exists():
            parent_index = ManifestIndex(
                ManifestIndex.location(settings.state_dir, parent_manifest), parent_manifest
            )
    try:
        digests, fresh = _hash_and_upload(
            files,
            lake=get_lake,
            catalog=catalog,
            settings=settings,
            statcache=statcache,
            root=str(Path(os.path.abspath(root))),
            progress=progress,
            stats=stats,
            parent_index=parent_index,
        )
        t1 = time.perf_counter()
        statcache.remember(fresh)
        stats.extra["statcache_write_s"] = time.perf_counter() - t1
    finally:
        statcache.close()
        if parent_index is not None:
            parent_index.close()
    del fresh

    t1 = time.perf_counter()
    entries = [
        ManifestEntry(f.path, d, f.size, f.mode) for f, d in zip(files, digests, strict=True)
    ]
    del files, digests
    stats.bytes = sum(e.size for e in entries)
    manifest = encode_manifest(entries)
    manifest_digest = hash_bytes(manifest)
    stats.extra["manifest_s"] = time.perf_counter() - t1
    if parent and not allow_empty and manifest_digest == parent_manifest:
        head = catalog.get_commit(dataset, parent)
        stats.commit_id = parent
        stats.created = False
        stats.seconds = time.perf_counter() - t0
        return head, stats
    t1 = time.perf_counter()
    # The local index (ls/diff instant afterwards) is written while the manifest
    # and the commit object travel; it exists before the commit is visible.
    build = partial(
        ManifestIndex.build, settings.state_dir, manifest_digest, entries, parent=parent_manifest
    )
    indexing = _Background(build)
    store = get_lake()
    store.put(manifest_key(manifest_digest), manifest)
    del manifest

    commit = Commit(
        dataset=dataset,
        manifest=manifest_digest,
        parents=(parent,) if parent else (),
        author=settings.author,
        message=message,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        file_count=len(entries),
        bytes=stats.bytes,
    )
    store.put(commit_key(commit.id), commit.to_json())
    indexing.result()
    del entries
    stats.extra["publish_s"] = time.perf_counter() - t1
    try:
        catalog.add_commit(commit, expected_head=parent)
    except ConflictError as exc:
        new_head = catalog.head(dataset)
        raise ConflictError(
            f"dataset {dataset!r} moved to {(new_head or '')[:12]} while you were committing on "
            f"{(parent or 'nothing')[:12]}; your commit was not made the head",
            hint=(
                "Your files are already uploaded, so this is quick: check what changed with "
                f"`lakecache data log {dataset}`, update your folder if needed, and run the same "
                "commit again; it will go on top of the new head."
            ),
        ) from exc
    stats.commit_id = commit.id
    stats.seconds = time.perf_counter() - t0
    return commit, stats


class _Background:
    """One call run in a thread; :meth:`result` waits and returns it (or raises its error)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._out: list[object] = []
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._out.append(fn())
            except BaseException as exc:  # re-raised by result(), in the caller's thread
                self._error.append(exc)

        self._thread = threading.Thread(target=run, name="lakecache-commit-bg", daemon=True)
        self._thread.start()

    def result(self) -> object:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._out[0]


def _same_in_parent(
    parent: ManifestIndex, remembered: list[tuple[int, SourceFile, str]]
) -> set[str]:
    """Digests of ``remembered`` that the parent commit has at the same path (a merge join)."""
    out: set[str] = set()
    it = iter(remembered)
    cur = next(it, None)
    for path, digest in parent.path_digests():
        while cur is not None and cur[1].path < path:
            cur = next(it, None)
        if cur is None:
            break
        if cur[1].path == path and cur[2] == digest:
            out.add(digest)
    return out


def _chunks(
    files: list[tuple[int, SourceFile]], threshold: int
) -> Iterator[list[tuple[int, SourceFile]]]:
    chunk: list[tuple[int, SourceFile]] = []
    size = 0
    for i, f in files:
        if f.size > threshold:
            yield [(i, f)]
            continue
        chunk.append((i, f))
        size += f.size
        if size >= CHUNK_BYTES or len(chunk) >= CHUNK_FILES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _hash_and_upload(
    files: list[SourceFile],
    *,
    lake: Callable[[], Lake],
    catalog: Catalog,
    settings: Settings,
    statcache: StatCache,
    root: str,
    progress: Progress,
    stats: CommitStats,
    parent_index: ManifestIndex | None = None,
) -> tuple[list[str], list[tuple[SourceFile, str]]]:
    """Fill in every file's digest and make sure the lake has every blob.

    ``lake`` is called (from the upload threads) only once something must be
    uploaded: a folder whose files are all known never waits for the client.
    """
    digests: list[str] = [""] * len(files)
    fresh: list[tuple[SourceFile, str]] = []
    progress.begin("commit", len(files), sum(f.size for f in files))

    # 1. Digests remembered by stat, kept only if the lake still has the blob: it
    # does if the parent commit holds the same bytes at the same path (a commit's
    # blobs are never collected), else the catalog is asked.
    remembered = [(i, f, d) for i, (f, d) in enumerate(statcache.lookup(root, files)) if d]
    in_parent = _same_in_parent(parent_index, remembered) if parent_index else set()
    rest = {d for _, _, d in remembered} - in_parent
    known: set[str] = in_parent | (catalog.known_blobs(rest) if rest else set())
    hit_files = hit_bytes = 0
    for i, f, d in remembered:
        if d in known:
            digests[i] = d
            hit_files += 1
            hit_bytes += f.size
    del remembered
    progress.advance(hit_files, hit_bytes)
    todo = [(i, f) for i, f in enumerate(files) if not digests[i]]
    seen: set[str] = set(known)

    threshold = settings.pack_threshold
    pack = _Pack()
    uploads: set[Future[Callable[[], None]]] = set()
    up_threads = max(2, settings.workers // 2)
    # A small change makes several small packs, not one big one, so its upload
    # still runs in parallel; a large commit gets full-size packs.
    todo_small = sum(f.size for _, f in todo if f.size <= threshold)
    pack_target = min(settings.pack_target, max(todo_small // up_threads, MIN_PACK))
    max_uploads = max(2, PACK_BYTES_IN_FLIGHT // max(pack_target, 1))

    def upload_pack(p: _Pack) -> Callable[[], None]:
        data = p.take()
        index = encode_pack_index(p.blobs)
        # Named by its index: the digests in order fix the bytes, at a fraction of the hashing.
        pack_id = hash_bytes(index)
        store = lake()
        store.put(pack_key(pack_id), data)
        store.put(pack_index_key(pack_id), index)
        size = len(data)
        del data
        locs = [BlobLocation(d, n, pack_id, o) for d, o, n in p.blobs]
        # The catalog is written from the coordinating thread only.
        return lambda: catalog.record_pack(pack_id, size, locs)

    def upload_large(f: SourceFile, digest: str) -> Callable[[], None]:
        reader = VerifyingReader(f, digest)
        try:
            lake().put_file(blob_key(digest), reader, f.size)  # type: ignore[arg-type]
        finally:
            reader.close()
        return lambda: catalog.record_blob(BlobLocation(digest, f.size))

    def settle(block_until: int) -> None:
        nonlocal uploads
        while len(uploads) > block_until:
            done, pending = wait(uploads, return_when=FIRST_COMPLETED)
            uploads = set(pending)
            for fut in done:
                fut.result()()

    def submit_pack(upool: ThreadPoolExecutor) -> None:
        nonlocal pack
        if not pack.blobs:
            return
        settle(max_uploads - 1)
        stats.packs += 1
        uploads.add(upool.submit(upload_pack, pack))
        pack = _Pack()

    def read_chunk(
        chunk: list[tuple[int, SourceFile]],
    ) -> list[tuple[int, SourceFile, str, bytes | None]]:
        out: list[tuple[int, SourceFile, str, bytes | None]] = []
        for i, f in chunk:
            if f.size > threshold:
                g, d = hash_stable(f, settings.part_size)
                out.append((i, g, d, None))
            else:
                g, data = read_stable(f)
                out.append((i, g, hash_bytes(data), data))
        return out

    readers = ThreadPoolExecutor(settings.workers, thread_name_prefix="lakecache-read")
    upool = ThreadPoolExecutor(up_threads, thread_name_prefix="lakecache-up")
    reads: dict[Future[list[tuple[int, SourceFile, str, bytes | None]]], None] = {}
    try:
        chunk_iter = _chunks(todo, threshold)
        exhausted = False
        while True:
            while not exhausted and len(reads) < settings.workers + 2:
                nxt = next(chunk_iter, None)
                if nxt is None:
                    exhausted = True
                    break
                reads[readers.submit(read_chunk, nxt)] = None
            if not reads:
                break
            done, _ = wait(list(reads), return_when=FIRST_COMPLETED)
            # One question to the catalog for every chunk read meanwhile: where asking is
            # the slow part (a round trip to a server), more chunks are done by the next
            # wait, and they go in one request instead of one each.
            batch = []
            for fut in done:
                del reads[fut]
                batch.append(fut.result())
            fresh_digests = {d for results in batch for _, _, d, _ in results if d not in seen}
            seen |= catalog.known_blobs(fresh_digests) if fresh_digests else set()
            for results in batch:
                for i, f, d, data in results:
                    files[i] = f
                    digests[i] = d
                    fresh.append((f, d))
                    stats.hashed_files += 1
                    stats.hashed_bytes += f.size
                    progress.advance(1, f.size)
                    if d in seen:
                        continue
                    seen.add(d)
                    stats.uploaded_blobs += 1
                    stats.uploaded_bytes += f.size
                    if data is None:
                        settle(max_uploads - 1)
                        uploads.add(upool.submit(upload_large, f, d))
                    else:
                        pack.add(d, data)
                        if pack.size >= pack_target:
                            submit_pack(upool)
        submit_pack(upool)
        settle(0)
    except BaseException:
        for r in reads:
            r.cancel()
        for u in uploads:
            u.cancel()
        raise
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        upool.shutdown(wait=True, cancel_futures=True)
        progress.end()
    return digests, fresh


def upload_files(
    files: list[SourceFile],
    *,
    lake: Lake,
    catalog: Catalog,
    settings: Settings,
    progress: Progress | None = None,
) -> list[str]:
    """Make sure the lake holds the bytes of every file in ``files`` (found by a scan of
    one folder, sorted by path), packed as a commit packs them; returns their digests in
    order. Nothing is published: the caller records what the files were (a job's
    outputs, say). Raises as :func:`commit_folder` does for unreadable or changing files.
    """
    import tempfile

    if not files:
        return []
    stats = CommitStats(files=len(files))
    with tempfile.TemporaryDirectory(prefix="lakecache-upload-") as tmp:
        statcache = StatCache(Path(tmp) / "statcache.db")
        try:
            digests, _ = _hash_and_upload(
                files,
                lake=lambda: lake,
                catalog=catalog,
                settings=settings,
                statcache=statcache,
                root=files[0].root,
                progress=progress or NullProgress(),
                stats=stats,
            )
        finally:
            statcache.close()
    return digests
