"""Write a list of manifest entries into a folder as plain files, fetched from the lake.

Strategy. Entries are grouped by the lake object that holds their blob. Blobs
in the same pack that lie close together are fetched with one ranged GET
(ranges capped at a few MiB so that memory stays bounded while many GETs run
in parallel); large blobs are streamed alone. Every blob's BLAKE3 is checked
before its file appears: each file is written under a temporary name in its
own folder and renamed into place, so a failure (a damaged object, the lake
going away, a kill) never leaves a half-written file under a real name.
A cache's files are written read-only (0444, 0555 if executable) as they are
written; a pull into a user's folder keeps the user's modes.

Used by ``pull`` (into any folder) and by cache fills (into a staging folder).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import blake3

from lakecache.data.memory import pin_mmap_threshold
from lakecache.data.progress import NullProgress, Progress
from lakecache.durable import fsync_dirs
from lakecache.errors import IntegrityError, InvalidPathError, ObjectNotFoundError
from lakecache.lake.base import read_into
from lakecache.lake.objects import BlobLocation, ManifestEntry, normalize_path

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.lake import Lake

RANGE_GAP = 1 << 20
RANGE_MAX = 8 << 20
#: Files placed, located and planned at a time: what a fill or pull holds in memory
#: besides its list of entries (a location and a range per blob of the batch).
BATCH_FILES = 50_000


@dataclass
class MaterializeStats:
    files: int = 0
    bytes: int = 0
    fetched_bytes: int = 0
    requests: int = 0
    skipped_files: int = 0
    linked_files: int = 0
    linked_bytes: int = 0


@dataclass(frozen=True)
class Range:
    key: str
    start: int
    length: int
    blobs: tuple[tuple[str, int, int], ...]  # (digest, offset within range, length)


class _Target:
    """Resolves entry paths under the destination, refusing anything that would escape it."""

    def __init__(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.root = os.path.realpath(dest)
        self._ok: set[str] = {""}

    def path(self, rel: str) -> str:
        # Manifest paths are canonical already (checked when decoded); this cheap
        # test keeps the full check for anything that is not, e.g. a forged index.
        wrapped = "/" + rel + "/"
        if (
            rel.startswith("/")
            or "\x00" in rel
            or "\\" in rel
            or "/../" in wrapped
            or "/./" in wrapped
            or "//" in wrapped
        ):
            rel = normalize_path(rel)
        folder = rel.rpartition("/")[0]
        if folder not in self._ok:
            full = os.path.join(self.root, folder)
            os.makedirs(full, exist_ok=True)
            real = os.path.realpath(full)
            if real != self.root and not real.startswith(self.root + os.sep):
                raise InvalidPathError(
                    f"{rel!r} would be written outside {self.root} (a symlink in the way)",
                    hint="Remove the symlink from the destination folder.",
                )
            self._ok.add(folder)
        return self.root + "/" + rel


# A temporary name must not clash with another writer's, in this process or in
# another one on another host (NFS): a random tag drawn once per process, then a
# counter. Drawing random bytes per file cost a getrandom(2) call each.
_TMP_TAG = os.urandom(6).hex()
_tmp_counter = itertools.count()
_tmp_pid = os.getpid()


def _tmp_name(final: str) -> str:
    global _TMP_TAG, _tmp_pid
    if os.getpid() != _tmp_pid:  # a forked child must not repeat its parent's names
        _TMP_TAG, _tmp_pid = os.urandom(6).hex(), os.getpid()
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail[:40]}.lakecache-tmp-{_TMP_TAG}{next(_tmp_counter):x}")


def file_mode(mode: int, *, read_only: bool) -> int | None:
    """The permission bits a file of manifest ``mode`` gets; None: leave the umask's.

    Read-only (cache files): 0444, or 0555 when executable. A cache file is
    often hard-linked into other caches: one shared inode, so a job that could
    write to it would corrupt every cache that holds it.
    """
    if read_only:
        return 0o555 if mode & 0o111 else 0o444
    return 0o755 if mode & 0o111 else None


def write_file(
    final: str,
    chunks: Iterable[bytes],
    mode: int,
    *,
    atomic: bool = True,
    read_only: bool = False,
    durable: bool = False,
) -> None:
    """Write ``chunks`` to ``final`` through a temporary name, then rename.

    ``atomic=False`` writes in place: only for a private staging folder, whose
    half-written files a resumed fill finds by their hash and writes again. A
    file already at ``final`` is unlinked first, never written through: it may
    be a read-only file, or a hard link that another cache shares.
    ``read_only`` gives the file 0444 (0555 if executable) before it appears.
    ``durable`` fsyncs the bytes before the rename; the caller fsyncs the folder.
    """
    perm = file_mode(mode, read_only=read_only)
    if not atomic:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(final, flags, 0o666)
        except FileExistsError:  # left by a fill that was killed: replace it
            os.unlink(final)
            fd = os.open(final, flags, 0o666)
        try:
            with open(fd, "wb") as f:
                for c in chunks:
                    f.write(c)
                _finish(f, perm, durable)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
            raise
        return
    tmp = _tmp_name(final)
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
            _finish(f, perm, durable)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def write_blob(
    final: str,
    data: memoryview | bytes,
    mode: int,
    *,
    atomic: bool = True,
    read_only: bool = False,
    durable: bool = False,
) -> None:
    """Write one verified blob held in memory to ``final``: :func:`write_file`'s rules.

    The bytes go straight from ``data`` to the kernel with ``os.write``: no
    buffered file object, whose ``open`` costs an fstat, an ioctl and an lseek
    per file besides the copy into its buffer. Small files are most of a
    dataset, so those syscalls were a large share of a pull's system time.
    """
    perm = file_mode(mode, read_only=read_only)
    path = final if not atomic else _tmp_name(final)
    try:
        fd = os.open(path, _CREATE, 0o666)
    except FileExistsError:
        if atomic:
            raise
        os.unlink(final)  # left by a fill that was killed: replace it
        fd = os.open(path, _CREATE, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if perm is not None:
                os.fchmod(fd, perm)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if atomic:
            os.replace(path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def _finish(f: BinaryIO, perm: int | None, durable: bool) -> None:
    # fchmod on the open file: no second path lookup (a round trip on NFS), and
    # the writes already made through this descriptor are not affected.
    if perm is not None:
        os.fchmod(f.fileno(), perm)
    if durable:
        f.flush()
        os.fsync(f.fileno())


def file_matches(path: str, entry: ManifestEntry) -> bool:
    """True if ``path`` is a regular file with the entry's size and hash."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    if not os.path.isfile(path) or os.path.islink(path) or st.st_size != entry.size:
        return False
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest() == entry.digest


def plan_ranges(locations: Iterable[BlobLocation]) -> Iterator[Range]:
    """Coalesce packed blobs into ranged GETs: near neighbours merge, ranges stay small."""
    by_pack: dict[str, list[BlobLocation]] = defaultdict(list)
    for loc in locations:
        by_pack[loc.key].append(loc)
    for key, locs in by_pack.items():
        locs.sort(key=lambda x: x.offset)
        start = end = -1
        blobs: list[tuple[str, int, int]] = []
        for loc in locs:
            if blobs and (
                loc.offset - end > RANGE_GAP or loc.offset + loc.size - start > RANGE_MAX
            ):
                yield Range(key, start, end - start, tuple(blobs))
                blobs = []
            if not blobs:
                start = loc.offset
                end = loc.offset
            blobs.append((loc.digest, loc.offset - start, loc.size))
            end = max(end, loc.offset + loc.size)
        if blobs:
            yield Range(key, start, end - start, tuple(blobs))


def materialize(
    entries: list[ManifestEntry],
    dest: Path,
    *,
    lake: Lake,
    catalog: Catalog,
    workers: int,
    chunk_size: int = 8 << 20,
    progress: Progress | None = None,
    skip_existing: bool = True,
    link_source: Callable[[ManifestEntry], str | None] | None = None,
    linkable: Callable[[ManifestEntry], bool] | None = None,
    private_dest: bool = False,
    read_only: bool = False,
    durable: bool = False,
    batch_files: int = BATCH_FILES,
) -> MaterializeStats:
    """Make ``dest`` hold every entry as a plain file, each verified against its digest.

    ``skip_existing`` keeps files already there with the right size and hash
    (a resumed pull re-downloads nothing it already verified). ``link_source``
    may name an existing verified file with the same bytes to hard-link instead
    of downloading (cache volumes); ``linkable``, a cheap test that is False
    where ``link_source`` would surely give nothing, lets those files' GETs start
    before the links are made. ``private_dest`` says nobody reads ``dest``
    until the caller publishes it (a cache's staging folder): files are then
    written and linked in place, without a temporary name each.
    ``read_only`` writes every file 0444 (0555 if executable), and makes files
    kept by ``skip_existing`` so too (a cache; folders are the caller's to seal).
    ``durable`` fsyncs each file before it appears and, before returning, each
    folder written to (once each); a fill instead syncs its staging folder's
    filesystem once before publishing it.
    Entries go ``batch_files`` at a time (placed, located in one catalog
    lookup, planned into ranges), the next batch planned while the last GETs
    of the one before run: memory beyond ``entries`` is bounded by a batch,
    whatever the number of files.

    Raises :class:`IntegrityError` naming the file and the lake object when
    bytes disagree with their digest or a blob is missing from the index; lake
    errors propagate after the backend's retries.
    """
    progress = progress or NullProgress()
    pin_mmap_threshold()
    # An IndexedEntries sums its sizes in SQLite: no pass over every entry for a total.
    total = getattr(entries, "total_bytes", None)
    nbytes = total() if total is not None else sum(e.size for e in entries)
    stats = MaterializeStats(files=len(entries), bytes=nbytes)
    target = _Target(dest)
    progress.begin("pull", stats.files, stats.bytes)
    written: set[str] = set()  # folders that got a new name, fsynced at the end if durable
    buffers = RangeBuffers()  # one range buffer per fetching thread, reused for each of its GETs

    # Which paths need which blob. Files already in place (a resumed pull or fill)
    # and files that can be hard-linked are settled first, in parallel: each is a
    # few syscalls, and on a network filesystem each syscall is a round trip.
    def place(chunk: list[ManifestEntry]) -> tuple[list[ManifestEntry], list[int]]:
        rest: list[ManifestEntry] = []
        counts = [0, 0, 0, 0]  # skipped files, bytes; linked files, bytes
        for e in chunk:
            final = target.path(e.path)
            if skip_existing and os.path.lexists(final) and file_matches(final, e):
                if read_only:
                    _make_read_only(final, e.mode)
                counts[0] += 1
                counts[1] += e.size
                continue
            src = link_source(e) if link_source is not None else None
            if src is not None:
                try:
                    _link(src, final, atomic=not private_dest)
                    if durable:
                        written.add(os.path.dirname(final))
                    counts[2] += 1
                    counts[3] += e.size
                    continue
                except OSError:
                    pass  # another filesystem or the source vanished: download instead
            rest.append(e)
        return rest, counts

    def put(path: str, chunks: Iterable[bytes], mode: int) -> None:
        write_file(
            path, chunks, mode, atomic=not private_dest, read_only=read_only, durable=durable
        )
        written.add(os.path.dirname(path))

    def fetchers(
        wanted: dict[str, list[ManifestEntry]],
    ) -> tuple[Callable[[Range], tuple[int, int]], Callable[[BlobLocation], tuple[int, int]]]:
        """The two fetches of one batch, bound to that batch's paths by digest."""

        def fetch_range(r: Range) -> tuple[int, int]:
            data = buffers.get(r.length)
            try:
                read_into(lake, r.key, r.start, data)
            except ObjectNotFoundError as exc:
                raise _lost(wanted[r.blobs[0][0]][0], r.key, exc) from exc
            files = nbytes = 0
            for digest, off, n in r.blobs:
                blob = data[off : off + n]
                if blake3.blake3(blob).hexdigest() != digest:
                    e = wanted[digest][0]
                    raise IntegrityError(
                        f"{e.path!r}: bytes at {r.key} offset {r.start + off} do not match its "
                        f"digest {digest[:16]}; the lake object is damaged. "
                        "Nothing was written for it."
                    )
                for e in wanted[digest]:
                    path = target.path(e.path)
                    write_blob(
                        path,
                        blob,
                        e.mode,
                        atomic=not private_dest,
                        read_only=read_only,
                        durable=durable,
                    )
                    written.add(os.path.dirname(path))
                files += len(wanted[digest])
                nbytes += n * len(wanted[digest])
            return files, nbytes

        def fetch_large(loc: BlobLocation) -> tuple[int, int]:
            es = wanted[loc.digest]
            first = target.path(es[0].path)
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            size = 0

            def stream() -> Iterator[bytes]:
                nonlocal size
                for c in lake.iter_chunks(loc.key, chunk_size=chunk_size):
                    h.update(c)
                    size += len(c)
                    yield c
                if size != loc.size or h.hexdigest() != loc.digest:
                    raise IntegrityError(
                        f"{es[0].path!r}: lake object {loc.key} does not match its digest "
                        f"{loc.digest[:16]} (got {size} bytes); the lake object is damaged. "
                        "Nothing was written for it."
                    )

            try:
                put(first, stream(), es[0].mode)
            except ObjectNotFoundError as exc:
                raise _lost(es[0], loc.key, exc) from exc
            for e in es[1:]:
                with open(first, "rb") as src:
                    put(target.path(e.path), iter(lambda: src.read(chunk_size), b""), e.mode)
            return len(es), loc.size * len(es)

        return fetch_range, fetch_large

    Task = tuple[Callable[[Any], tuple[int, int]], object, int]

    def tasks(place_pool: ThreadPoolExecutor) -> Iterator[Task]:
        """The GETs, batch after batch: only a batch's paths, locations and ranges are held.

        A batch is placed, located (one catalog lookup) and planned only when
        the fetches of the one before are all under way, so memory is bounded
        by the batch size whatever the number of files (627,615 in B), while
        the pool never runs dry at a batch's end.
        """
        for begin in range(0, len(entries), batch_files):
            batch = entries[begin : begin + batch_files]
            if linkable is not None and link_source is not None and not skip_existing:
                # What no other file can give is fetched at once, while the rest is linked:
                # a 99%-shared fill's GETs then overlap its links instead of following them.
                now: dict[str, list[ManifestEntry]] = defaultdict(list)
                to_place: list[ManifestEntry] = []
                for e in batch:
                    if linkable(e):
                        to_place.append(e)
                    else:
                        now[e.digest].append(e)
                if now:
                    yield from planned(now)
                del now
                batch = to_place
            wanted: dict[str, list[ManifestEntry]] = defaultdict(list)
            if skip_existing or link_source is not None:
                chunks = [batch[i : i + 512] for i in range(0, len(batch), 512)]
                for rest, (sf, sb, lf, lb) in place_pool.map(place, chunks):
                    stats.skipped_files += sf
                    stats.linked_files += lf
                    stats.linked_bytes += lb
                    progress.advance(sf + lf, sb + lb)
                    for e in rest:
                        wanted[e.digest].append(e)
            else:
                for e in batch:
                    wanted[e.digest].append(e)
            del batch
            if wanted:
                yield from planned(wanted)

    def planned(wanted: dict[str, list[ManifestEntry]]) -> list[Task]:
        """The GETs of ``wanted`` (digest -> its entries): located in one lookup, planned."""
        locs = catalog.locate_blobs(wanted.keys())
        missing = [d for d in wanted if d not in locs]
        if missing:
            e = wanted[missing[0]][0]
            raise IntegrityError(
                f"{e.path!r} cannot be pulled: its blob {missing[0][:16]} is not in the "
                f"lake's index ({len(missing)} blob(s) missing)"
            )
        fetch_range, fetch_large = fetchers(wanted)
        todo: list[Task] = [
            (fetch_range, r, r.length) for r in plan_ranges(v for v in locs.values() if v.pack_id)
        ]
        todo.extend((fetch_large, loc, loc.size) for loc in locs.values() if not loc.pack_id)
        # Large objects first: they take longest, and the small ranges fill the gaps.
        todo.sort(key=lambda t: -t[2])
        return todo

    place_pool = ThreadPoolExecutor(workers, thread_name_prefix="lakecache-place")
    pool = ThreadPoolExecutor(workers, thread_name_prefix="lakecache-pull")
    running: set[Future[tuple[int, int]]] = set()
    try:
        it = tasks(place_pool)
        while True:
            while len(running) < 2 * workers:
                nxt = next(it, None)
                if nxt is None:
                    break
                fn, arg, nbytes = nxt
                running.add(pool.submit(fn, arg))
                stats.requests += 1
                stats.fetched_bytes += nbytes
            if not running:
                break
            done, running_ = wait(running, return_when=FIRST_COMPLETED)
            running = set(running_)
            for fut in done:
                files, nbytes = fut.result()
                progress.advance(files, nbytes)
    except BaseException:
        for fut in running:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        place_pool.shutdown(wait=True, cancel_futures=True)
        progress.end()
    if durable:
        fsync_dirs(written)
    return stats


class RangeBuffers:
    """One buffer per thread for ranged GETs, kept for the thread's next range.

    A new buffer per range cost its allocation, a page fault for each of its
    pages as the body filled it (the kernel zeroes each one first) and an unmap
    when freed: a fifth of a pull's system time. Memory is a buffer of
    :data:`RANGE_MAX` per worker (larger only for a larger blob), freed with the
    object when the pull ends.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, n: int) -> memoryview:
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            self._local.buf = None  # the old one goes before the new one is made
            buf = self._local.buf = bytearray(max(n, RANGE_MAX))
        return memoryview(buf)[:n]


def _lost(e: ManifestEntry, key: str, exc: ObjectNotFoundError) -> ObjectNotFoundError:
    return ObjectNotFoundError(
        f"{e.path!r} cannot be pulled: lake object {key} is missing or short ({exc.message}). "
        "Nothing was written for it."
    )


def _make_read_only(path: str, mode: int) -> None:
    """Take the write bits off a kept file (written by a fill from before caches were sealed)."""
    perm = file_mode(mode, read_only=True)
    assert perm is not None
    if os.lstat(path).st_mode & 0o777 != perm:
        os.chmod(path, perm)


def _link(src: str, final: str, *, atomic: bool = True) -> None:
    if not atomic:
        try:
            os.link(src, final)
        except FileExistsError:  # left by a fill that was killed: replace it
            os.unlink(final)
            os.link(src, final)
        return
    tmp = _tmp_name(final)
    os.link(src, tmp)
    os.replace(tmp, final)
