"""Artifacts and logs of runs in the lake: content-addressed, stored once.

Each file is one lake object named by the BLAKE3 hash of its bytes, under
``tracking/objects/ab/cdef...`` (the same hash and fan-out as dataset blobs,
but a prefix of its own: the lake's garbage collector sweeps what no commit
reaches under ``blobs/``, and a run's artifacts are no commit's). The same
checkpoint logged by a hundred runs is stored once; uploading skips what the
lake already holds.

Only the server (or a direct user, who holds the lake) writes here; a client
of a server sends the bytes to the server, which hashes them itself.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import blake3

from lakecache.errors import InvalidPathError
from lakecache.lake.base import Lake
from lakecache.lake.objects import check_digest
from lakecache.tracking.store import TrackingStore

PREFIX = "tracking/objects/"
_CHUNK = 1 << 20


def object_key(digest: str) -> str:
    check_digest(digest)
    return f"{PREFIX}{digest[:2]}/{digest[2:]}"


def hash_file(path: Path) -> tuple[str, int]:
    """BLAKE3 digest and size of a file, read in 1 MiB chunks."""
    h = blake3.blake3()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def put_bytes(lake: Lake, data: bytes) -> str:
    """Store ``data`` (unless the lake has it); its digest."""
    digest = blake3.blake3(data).hexdigest()
    key = object_key(digest)
    if not lake.exists([key]):
        lake.put(key, data)
    return digest


def put_file(lake: Lake, path: Path) -> tuple[str, int]:
    """Store a file (unless the lake has its bytes); its digest and size.

    The file is hashed first, then uploaded from disk: memory stays flat
    whatever its size. A file that changed in between is caught by the
    size check (the bytes are then read again into memory and stored as read).
    """
    digest, size = hash_file(path)
    key = object_key(digest)
    if lake.exists([key]):
        return digest, size
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size != size:
            return put_bytes(lake, path.read_bytes()), path.stat().st_size
        lake.put_file(key, f, size)
    return digest, size


def read_object(lake: Lake, digest: str, start: int = 0, length: int | None = None) -> bytes:
    return lake.get(object_key(digest), start, length)


def artifact_path(path: str) -> str:
    """A run artifact's path, normalised: relative, '/'-separated, no '..' or NUL."""
    if not path or "\x00" in path or "\\" in path:
        raise InvalidPathError(f"invalid artifact path {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise InvalidPathError(
            f"invalid artifact path {path!r}",
            hint="Name artifacts with relative paths without '..', '.' or empty parts.",
        )
    if len(path) > 1024:
        raise InvalidPathError(f"artifact path {path[:40]!r}... is over 1024 characters")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPathError(f"artifact path {path!r} is not UTF-8") from None
    return path


def log_artifact(store: TrackingStore, lake: Lake, run_id: int, path: Path, name: str) -> str:
    """Upload a file as the run's artifact ``name``; its digest."""
    name = artifact_path(name)
    digest, size = put_file(lake, path)
    store.add_artifact(run_id, name, digest, size)
    return digest


def append_log(store: TrackingStore, lake: Lake, run_id: int, stream: str, data: bytes) -> int:
    """Append bytes to the run's log ``stream``; the offset they start at."""
    digest = put_bytes(lake, data)
    return store.add_log_chunk(run_id, stream, digest, len(data))


def read_log(
    store: TrackingStore,
    lake: Lake,
    run_id: int,
    stream: str,
    offset: int = 0,
    limit: int = 1 << 20,
) -> bytes:
    """Up to ``limit`` bytes of a run's log from byte ``offset``."""
    out = io.BytesIO()
    for start, digest, size in store.log_chunks(run_id, stream):
        end = start + size
        if end <= offset or out.tell() >= limit:
            continue
        skip = max(0, offset - start)
        want = min(size - skip, limit - out.tell())
        out.write(read_object(lake, digest, skip, want))
    return out.getvalue()


def read_artifact(store: TrackingStore, lake: Lake, run_id: int, path: str) -> bytes:
    record = store.get_artifact(run_id, artifact_path(path))
    return read_object(lake, record.digest)
