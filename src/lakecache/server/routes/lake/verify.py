"""Bytes hash to their names before anything records them.

A client with a presigned URL puts bytes in the lake that the server never
saw. Before a pack or a large blob is recorded, the server reads it back once,
in large ranged GETs, and hashes it in one pass (BLAKE3: about 1 GB/s a core):
every blob of a pack against its index, a large blob against its key. An
object that fails is garbage; it is deleted, since conditional writes
(``If-None-Match: *``) would otherwise keep the right bytes out for good.

The same checks run on bytes streamed through the server (a folder lake, or a
proof that a writer holds the bytes of an object that exists already).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import blake3

from lakecache.errors import IntegrityError, ObjectNotFoundError, UserError
from lakecache.lake.objects import decode_pack_index, hash_bytes, pack_index_key

if TYPE_CHECKING:
    from lakecache.lake import Lake

#: Bytes per ranged GET when reading an object back.
READ_CHUNK = 8 << 20

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
                self._hash = blake3.blake3()
            if self._next == len(self._entries):
                self._left = -1  # every blob checked
                return
            self._left = self._entries[self._next][2]
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


def check_pack_bytes(name: str, chunks: Iterable[bytes], entries: PackIndex) -> None:
    """Hash a pack's bytes against its index in one pass; IntegrityError if any blob lies."""
    verifier = PackVerifier(name, entries)
    for chunk in chunks:
        verifier.feed(chunk)
    verifier.finish()


def blob_digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    """The BLAKE3 and the length of a large blob's bytes (several threads per chunk)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        h.update(chunk)
    return h.hexdigest(), seen


def read_back(lake: Lake, key: str) -> Iterable[bytes]:
    """The object's bytes in :data:`READ_CHUNK` pieces; UserError if it is not in the lake."""
    chunks = iter(lake.iter_chunks(key, chunk_size=READ_CHUNK))
    try:
        first = next(chunks, b"")
    except ObjectNotFoundError:
        raise UserError(
            f"{key} is not in the lake", hint="Upload it before recording it."
        ) from None
    yield first
    yield from chunks


def refuse_garbage(lake: Lake, key: str, exc: IntegrityError) -> UserError:
    """Delete an object whose bytes lie about its name, and say so (the caller raises it)."""
    lake.delete([key])
    return UserError(
        f"{exc.message}; the server removed {key} from the lake",
        hint="Run the commit again: the right bytes are uploaded anew.",
    )
