"""The bytes through the server itself, for a lake it cannot sign URLs for (a folder)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import blake3
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lakecache.errors import IntegrityError, TooLargeError, UserError
from lakecache.lake.base import check_key, local_path
from lakecache.server.auth import Plane, User
from lakecache.server.routes.lake.access import (
    MAX_DATASETS,
    MAX_PUT,
    STREAM_WRITE,
    Extents,
    allowed,
    check_key_bytes,
    check_readable,
    key_kind,
    lake_access,
    redact,
)
from lakecache.server.routes.lake.models import StoredOut
from lakecache.server.routes.lake.verify import PackVerifier, pack_index

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane

router = APIRouter(prefix="/lake")

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@router.get(
    "/objects/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The object's bytes"},
        206: {"content": {"application/octet-stream": {}}, "description": "The bytes asked for"},
    },
)
def get_object(
    key: str,
    request: Request,
    principal: User,
    plane: Plane,
    dataset: Annotated[list[str], Query(min_length=1, max_length=MAX_DATASETS)],
) -> Response:
    """An object's bytes (or one ``Range: bytes=a-b``), streamed from the lake (readers).

    A pack the datasets share with others by deduplication is served with
    every byte outside their own blobs zeroed (see :func:`.access.redact`).
    """
    check_key(key)
    readable = allowed(plane, principal, dataset, "reader")
    access = lake_access(request)
    partial = check_readable(access, readable, [key])
    start, length = 0, None
    header = request.headers.get("range")
    if header:
        m = _RANGE.fullmatch(header.strip())
        if not m:
            raise UserError(f"unsupported Range {header!r}", hint="Send one range: bytes=a-b.")
        start = int(m.group(1))
        if m.group(2):
            length = int(m.group(2)) - start + 1
            if length < 0:
                raise UserError(f"empty Range {header!r}")
    readable_only: Extents | None = None
    if key in partial:
        readable_only = access.readable_ranges(readable, key)
    lake = plane.hub.lake
    chunks = lake.iter_chunks(key, start, length, chunk_size=1 << 20)
    if readable_only is not None:
        chunks = redact(chunks, start, readable_only)
    first = next(chunks, b"")  # a missing object is a JSON error, not a cut response
    headers = {"Cache-Control": "no-store"}
    status = 200
    if length is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/*"
        headers["Content-Length"] = str(length)
    return StreamingResponse(
        _chain(first, chunks),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


@router.put("/objects/{key:path}", response_model=StoredOut)
async def put_object(
    key: str,
    request: Request,
    principal: User,
    plane: Plane,
    dataset: Annotated[list[str], Query(min_length=1, max_length=MAX_DATASETS)],
) -> StoredOut:
    """Store the request body as a new object, streamed to disk (writers; a lake the server
    streams only), or prove that the caller holds the bytes of an object that exists.

    New content-addressed keys are hashed on the way in (a pack when it is
    recorded) and published without replacing anything. For a key that exists,
    on any lake, the body is hashed and dropped: bytes that match the object's
    name (a blob's digest, a pack's index) grant its blobs to the named datasets
    the caller writes (``presign`` answers ``prove`` for such keys); any other
    body is refused and changes nothing.
    """
    writable = await run_in_threadpool(allowed, plane, principal, dataset, "writer")
    kind, _ = key_kind(key)
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise UserError("send the object's size in Content-Length", hint="No chunked uploads.")
    size = int(declared)
    if size > MAX_PUT:
        raise TooLargeError(
            f"one object is at most {MAX_PUT} bytes (S3's largest single PUT), not {size}",
            hint="Upload it in parts: POST /api/v1/lake/multipart (the client does this itself).",
        )
    lake = plane.hub.lake
    if await run_in_threadpool(lambda: bool(lake.exists([key]))):
        await _prove(plane, key, request.stream(), size, writable)
        return StoredOut(key=key, status="exists", size=size)
    root = getattr(lake, "root", None)
    if lake_access(request).presigner is not None or not isinstance(root, Path):
        raise UserError(
            "this server's lake takes uploads through presigned URLs",
            hint="POST /api/v1/lake/presign for a URL, then PUT to it.",
        )
    final = local_path(root, key)
    # A pack's bytes are checked blob by blob against its index when it is recorded (its
    # index comes after it): a hash of the whole would be a pass over the bytes for nothing.
    hashed = kind != "pack"
    digest, upload = await _stream_to(final, request.stream(), size, hashed=hashed)
    try:
        if hashed:
            check_key_bytes(key, digest)
    except BaseException:
        await run_in_threadpool(upload.discard)
        raise
    published = await run_in_threadpool(_publish, final, upload)
    return StoredOut(key=key, status="stored" if published else "exists", size=size)


async def _prove(
    plane: ControlPlane, key: str, body: AsyncIterator[bytes], size: int, writable: list[str]
) -> None:
    """Hash a body sent for an existing key against the key's name, store nothing, and grant
    the blobs it proves the caller holds. UserError (nothing granted) if it does not match."""
    kind, ident = key_kind(key)
    catalog = plane.hub.catalog
    recorded = await run_in_threadpool(
        lambda: bool(
            (kind == "blob" and catalog.locate_blobs([ident]))
            or (kind == "pack" and catalog.pack_sizes([ident]))
        )
    )
    if not recorded:
        # Naming no blob, or not recorded yet (its record reads it back and grants it):
        # nothing to prove.
        async for _ in body:  # drain, so the client reads the answer cleanly
            pass
        return
    entries = None
    if kind == "pack":
        entries = await run_in_threadpool(pack_index, plane.hub.lake, ident)
    feed, digests = _prover(key, ident, entries)
    got = 0
    buf = bytearray()
    try:
        async for chunk in body:
            got += len(chunk)
            if got > size:
                raise UserError(f"the body is longer than its Content-Length ({size})")
            buf += chunk
            if len(buf) >= STREAM_WRITE:
                await run_in_threadpool(feed, bytes(buf))
                buf.clear()
        await run_in_threadpool(feed, bytes(buf))
        await run_in_threadpool(feed, None)
    except IntegrityError as exc:
        raise UserError(
            f"the bytes sent for {key} are not the object's: {exc.message}",
            hint="Send the object's own bytes; nothing was granted.",
        ) from None
    await run_in_threadpool(catalog.grant_blobs, writable, digests)


def _prover(
    key: str, ident: str, entries: list[tuple[str, int, int]] | None
) -> tuple[Callable[[bytes | None], None], list[str]]:
    """A function fed the body's bytes, then None at the end (IntegrityError if they lie),
    and the digests it proves."""
    if entries is not None:
        verifier = PackVerifier(key, entries)

        def feed_pack(data: bytes | None) -> None:
            if data is None:
                verifier.finish()
            else:
                verifier.feed(data)

        return feed_pack, [d for d, _, _ in entries]
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)

    def feed_blob(data: bytes | None) -> None:
        if data is not None:
            h.update(data)
        elif h.hexdigest() != ident:
            raise IntegrityError(f"they do not hash to {ident[:16]}")

    return feed_blob, [ident]


class _Upload:
    """A temporary file beside the final object, hashed while written (if ``hashed``)."""

    def __init__(self, final: Path, hashed: bool = True) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.hash = blake3.blake3() if hashed else None
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        if self.hash is not None:
            self.hash.update(data)
        self.size += len(data)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _stream_to(
    final: Path, body: AsyncIterator[bytes], size: int, *, hashed: bool
) -> tuple[str, _Upload]:
    """Write the body to a temporary file beside ``final``: (its BLAKE3, or "" when not
    ``hashed``; the upload, not published yet)."""
    upload = await run_in_threadpool(_Upload, final, hashed)
    try:
        buf = bytearray()
        async for chunk in body:
            buf += chunk
            if upload.size + len(buf) > size:
                raise UserError(f"the body is longer than its Content-Length ({size})")
            if len(buf) >= STREAM_WRITE:
                await run_in_threadpool(upload.write, bytes(buf))
                buf.clear()
        if buf:
            await run_in_threadpool(upload.write, bytes(buf))
        if upload.size != size:
            raise UserError(f"the body ended after {upload.size} of {size} bytes")
        await run_in_threadpool(upload.file.close)
    except BaseException:
        await run_in_threadpool(upload.discard)
        raise
    return ("" if upload.hash is None else upload.hash.hexdigest()), upload


def _publish(final: Path, upload: _Upload) -> bool:
    """Link the finished upload into place: readers see all of it or nothing, and an object
    that appeared meanwhile is never replaced (False then: the upload is dropped)."""
    try:
        os.link(upload.path, final)
    except FileExistsError:
        return False
    finally:
        upload.discard()
    return True
