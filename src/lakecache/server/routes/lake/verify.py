"""Bytes hash to their names before anything records them.

A client with a presigned URL puts bytes in the lake that the server never
saw. Before a pack or a large blob is recorded, the server reads it back once
and hashes it as it arrives (BLAKE3: about 1 GB/s a core), never holding a
second copy: every blob of a pack against its index, a large blob against its
key. An object that fails is garbage; it is deleted, since conditional writes
(``If-None-Match: *``) would otherwise keep the right bytes out for good.

What it costs a commit. The client records each pack in the background, a few
at a time, while its next packs upload (:mod:`lakecache.client.catalog`), so
the check runs beside the upload; what the commit waits for is the check of
its last packs, and the CPU the checks take from a busy machine. So a pack is
read back in :data:`SEGMENT`-sized ranged GETs of whole blobs, several at
once (:class:`PackChecker`, :data:`CHECK_THREADS` for the whole server, over
the lake's one pool of connections), each hashed as its bytes arrive: the last
pack's check takes the time of its slowest segment, not of the whole pack.
Blobs of :data:`LARGE_BLOB` bytes or more are hashed by several threads.

The same checks run on bytes streamed through the server (a folder lake, or a
proof that a writer holds the bytes of an object that exists already).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

import blake3

from lakecache.errors import IntegrityError, ObjectNotFoundError, UserError
from lakecache.lake.objects import decode_pack_index, hash_bytes, pack_index_key
from lakecache.server.routes.lake.access import size_of

if TYPE_CHECKING:
    from lakecache.lake import Lake

#: Bytes per ranged GET when reading an object back.
READ_CHUNK = 8 << 20
#: Bytes of whole blobs one ranged GET of a pack reads back (a segment).
SEGMENT = 16 << 20
#: Bytes hashed per read while a segment streams in: the memory a segment takes.
SEGMENT_READ = 1 << 20
#: Segments read back at once, for the whole server.
CHECK_THREADS = 8
#: Blobs at least this large are hashed by several threads.
LARGE_BLOB = 1 << 20
#: Ranged GETs of a large blob read ahead of its hashing (memory: this x READ_CHUNK).
BLOB_READ_AHEAD = 4

PackIndex = Sequence[tuple[str, int, int]]


class PackVerifier:
    """Hashes a pack's bytes as they come, blob by blob, against its index.

    Feed the bytes in order (any chunking), then call :meth:`finish`. Raises
    :class:`IntegrityError` at the first blob that does not hash to its digest,
    or when the bytes are longer or shorter than the index lays out.
    """

    def __init__(self, name: str, entries: PackIndex) -> None:
        self._name = name
        self._entries = entries
        self._next = 0
        self._left = 0
        self._hash = blake3.blake3()
        self._size = sum(n for _, _, n in entries)
        self._seen = 0
        self._advance()

    def _advance(self) -> None:
        """Check every blob whose bytes are all in; stop at the first still wanting some."""
        while self._left == 0:
            if self._next > 0:
                digest, offset, _ = self._entries[self._next - 1]
                if self._hash.hexdigest() != digest:
                    raise IntegrityError(
                        f"the blob at offset {offset} of {self._name} does not hash to "
                        f"{digest[:16]}, as its index says"
                    )
            if self._next == len(self._entries):
                self._left = -1  # every blob checked
                return
            self._left = self._entries[self._next][2]
            # Threads pay for themselves on large blobs only.
            self._hash = (
                blake3.blake3(max_threads=blake3.blake3.AUTO)
                if self._left >= LARGE_BLOB
                else blake3.blake3()
            )
            self._next += 1

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        self._seen += len(view)
        if self._seen > self._size:
            raise IntegrityError(f"{self._name} is longer than its index ({self._size} bytes)")
        pos = 0
        while pos < len(view):
            take = min(self._left, len(view) - pos)
            self._hash.update(view[pos : pos + take])
            pos += take
            self._left -= take
            self._advance()

    def finish(self) -> None:
        if self._seen != self._size:
            raise IntegrityError(
                f"{self._name} has {self._seen} bytes; its index lays out {self._size}"
            )


def pack_index(lake: Lake, pack_id: str) -> list[tuple[str, int, int]]:
    """The index of pack ``pack_id`` from the lake, checked: it hashes to the pack's id and
    lays its blobs end to end from offset 0. UserError if it is missing or malformed."""
    key = pack_index_key(pack_id)
    try:
        index = lake.get(key)
    except ObjectNotFoundError:
        raise UserError(
            f"{key} is not in the lake", hint="Upload the pack's index before recording the pack."
        ) from None
    if hash_bytes(index) != pack_id:
        raise UserError(f"the index of pack {pack_id[:16]} does not hash to its id")
    try:
        entries = decode_pack_index(index)
    except (ValueError, UnicodeDecodeError, IntegrityError):
        raise UserError(f"the index of pack {pack_id[:16]} is not a pack index") from None
    end = 0
    for _, offset, length in entries:
        if offset != end or length < 0:
            raise UserError(f"the index of pack {pack_id[:16]} has a gap or overlap")
        end += length
    return entries


def segments(entries: PackIndex, size: int | None = None) -> list[PackIndex]:
    """The index cut into runs of consecutive whole blobs of about ``size`` bytes each
    (default :data:`SEGMENT`; a blob larger than that is a run of its own)."""
    size = SEGMENT if size is None else size
    out: list[PackIndex] = []
    start, run = 0, 0
    for i, (_, _, length) in enumerate(entries):
        if run and run + length > size:
            out.append(entries[start:i])
            start, run = i, 0
        run += length
    if start < len(entries):
        out.append(entries[start:])
    return out


class PackChecker:
    """Reads packs back in segments, several at once, and hashes each as it arrives.

    One per server (:class:`~.access.LakeAccess` holds it): its threads bound the
    ranged GETs in flight, whatever the number of packs being recorded at once.
    Thread-safe; its threads start on first use.
    """

    def __init__(self, threads: int = CHECK_THREADS) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="pack-check")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def check(self, lake: Lake, key: str, entries: PackIndex) -> None:
        """Read pack ``key`` back and hash every blob against ``entries`` (its checked index).

        IntegrityError at the first blob that lies, or if the object is shorter
        or longer than the index lays out (the last segment reads to the
        object's end); UserError if it is not in the lake. Returns once every
        segment is checked, or the first fails (the others are cancelled, or
        left to finish on their own).
        """
        parts = segments(entries)
        expected = sum(n for _, _, n in entries)
        try:
            if len(parts) <= 1:  # one GET: no thread to hand it to
                _check_segment(lake, key, parts[0] if parts else (), last=True)
                return
            pool = self._executor()
            pending = {
                pool.submit(_check_segment, lake, key, part, last=i == len(parts) - 1)
                for i, part in enumerate(parts)
            }
            try:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()
            finally:
                for future in pending:
                    future.cancel()
        except ObjectNotFoundError:
            # Missing, or shorter than a segment's range: which one is worth a request only now.
            size = size_of(lake, key)
            if size is None:
                raise UserError(
                    f"{key} is not in the lake", hint="Upload it before recording it."
                ) from None
            raise IntegrityError(f"{key} has {size} bytes; its index lays out {expected}") from None

    def blob_digest(self, lake: Lake, key: str) -> tuple[str, int]:
        """The BLAKE3 and the size of a large blob in the lake, read back in
        :data:`READ_CHUNK` ranged GETs, a few ahead of the hashing, hashed in order.
        UserError if it is not in the lake."""
        size = size_of(lake, key)
        if size is None:
            raise UserError(f"{key} is not in the lake", hint="Upload it before recording it.")
        pool = self._executor()
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        ranges = iter(range(0, size, READ_CHUNK))
        window: deque[Future[bytes]] = deque()
        try:
            while True:
                while len(window) < BLOB_READ_AHEAD and (start := next(ranges, None)) is not None:
                    length = min(READ_CHUNK, size - start)
                    window.append(pool.submit(_read_range, lake, key, start, length))
                if not window:
                    break
                h.update(window.popleft().result())
        finally:
            for future in window:
                future.cancel()
        return h.hexdigest(), size


def _read_range(lake: Lake, key: str, start: int, length: int) -> bytes:
    try:
        return lake.get(key, start, length)
    except ObjectNotFoundError:
        raise UserError(
            f"{key} left the lake while it was checked", hint="Run the commit again."
        ) from None


def _check_segment(lake: Lake, key: str, part: PackIndex, *, last: bool) -> None:
    """Hash one run of whole blobs of pack ``key`` as it streams in (one ranged GET); the
    ``last`` run reads on to the object's end, so that bytes beyond the index are found."""
    start = part[0][1] if part else 0
    length = None if last else sum(n for _, _, n in part)
    verifier = PackVerifier(key, part)
    for chunk in lake.iter_chunks(key, start, length, chunk_size=SEGMENT_READ):
        verifier.feed(chunk)
    verifier.finish()


def refuse_garbage(lake: Lake, key: str, exc: IntegrityError) -> UserError:
    """Delete an object whose bytes lie about its name, and say so (the caller raises it)."""
    lake.delete([key])
    return UserError(
        f"{exc.message}; the server removed {key} from the lake",
        hint="Run the commit again: the right bytes are uploaded anew.",
    )
