"""The bytes through the server itself, for a lake it cannot sign URLs for (a folder)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import blake3
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lakecache.errors import UserError
from lakecache.lake.base import check_key, local_path
from lakecache.server.auth import Plane, User
from lakecache.server.routes.lake.access import (
    MAX_DATASETS,
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
    streams only). Content-addressed keys are hashed on the way in; an existing key is
    left as it is and answered ``exists``."""
    await run_in_threadpool(allowed, plane, principal, dataset, "writer")
    kind, _ = key_kind(key)
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise UserError("send the object's size in Content-Length", hint="No chunked uploads.")
    size = int(declared)
    lake = plane.hub.lake
    root = getattr(lake, "root", None)
    if lake_access(request).presigner is not None or not isinstance(root, Path):
        raise UserError(
            "this server's lake takes uploads through presigned URLs",
            hint="POST /api/v1/lake/presign for a URL, then PUT to it.",
        )
    final = local_path(root, key)
    if await run_in_threadpool(final.is_file):
        async for _ in request.stream():  # drain, so the client reads the answer cleanly
            pass
        return StoredOut(key=key, status="exists", size=final.stat().st_size)
    digest, upload = await _stream_to(final, request.stream(), size)
    try:
        # A pack's bytes are checked against its index when it is recorded.
        check_key_bytes(key, digest)
    except BaseException:
        await run_in_threadpool(upload.discard)
        raise
    await run_in_threadpool(_publish, final, upload)
    return StoredOut(key=key, status="stored", size=size)


class _Upload:
    """A temporary file beside the final object, hashed while written."""

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.hash = blake3.blake3()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _stream_to(final: Path, body: AsyncIterator[bytes], size: int) -> tuple[str, _Upload]:
    upload = await run_in_threadpool(_Upload, final)
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
    return upload.hash.hexdigest(), upload


def _publish(final: Path, upload: _Upload) -> None:
    """Rename the finished upload into place: readers see all of it or nothing."""
    try:
        os.replace(upload.path, final)
    except BaseException:
        upload.discard()
        raise
