"""Request bodies read with a bound: never more than a limit in memory or on disk.

Starlette's ``request.body()`` reads a whole body before anyone can look at its
size, so a client could send gigabytes to a route that takes kilobytes. Routes
that read a raw body use these instead:

* :func:`read_body` for small bodies held in memory (a log chunk, a metrics
  batch): a ``Content-Length`` over the limit is refused (413) before a byte is
  read, a body that grows past it (chunked, or lying) is refused at that point;
* :class:`JsonBodyLimit`, a middleware, for the JSON bodies FastAPI reads itself;
* :func:`spool_body` for uploads that go to a file first (job outputs, run
  artifacts): the same two checks against the ``max_output_bytes`` setting, plus
  room on the disk for ``room_factor`` times the declared size (507 otherwise,
  or when the disk fills up midway). The caller removes the file on any error:
  a temporary folder around it does that.
"""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakecache.compute.outputs import disk_full, ensure_room, too_large
from lakecache.errors import TooLargeError, UserError
from lakecache.server.errors import error_response


def declared_size(request: Request) -> int | None:
    """The body's size as its ``Content-Length`` says, None without one (chunked)."""
    header = request.headers.get("content-length")
    return int(header) if header is not None and header.isdigit() else None


async def read_body(request: Request, limit: int, what: str, *, hint: str) -> bytes:
    """The body, if it has at most ``limit`` bytes; TooLargeError (413) otherwise, raised
    before reading for a larger ``Content-Length``, else once the body passes it."""
    declared = declared_size(request)
    if declared is not None and declared > limit:
        raise TooLargeError(f"{what} is at most {limit} bytes, not {declared}", hint=hint)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise TooLargeError(f"{what} is at most {limit} bytes; this one is more", hint=hint)
    return bytes(buf)


async def spool_body(
    request: Request,
    dest: Path,
    limit: int,
    what: str,
    *,
    room_factor: int = 1,
    hint: str | None = None,
) -> int:
    """Write the body to the new file ``dest``; its size. At most ``limit`` bytes (the
    ``max_output_bytes`` setting: TooLargeError, 413, naming it); the disk must have
    ``room_factor`` times the declared size free (InsufficientStorageError, 507). On an
    error, what was written stays in ``dest`` for the caller to remove."""
    declared = declared_size(request)
    if declared is not None and declared > limit:
        raise too_large(what, declared, limit, hint=hint)
    await run_in_threadpool(ensure_room, dest.parent, room_factor * (declared or 0), what)
    received = 0
    try:
        with open(dest, "wb") as f:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large(what, limit, limit, so_far=True, hint=hint)
                if declared is not None and received > declared:
                    raise UserError(
                        f"{what}: the body is longer than its Content-Length ({declared})",
                        hint="Send the exact size in Content-Length.",
                    )
                await run_in_threadpool(f.write, chunk)
    except OSError as exc:
        full = disk_full(exc, what)
        if full is None:
            raise
        raise full from None
    return received


#: The largest JSON body any route takes (the models bound each field well below it; a
#: MLflow or tracking metrics batch is the largest). Checked before FastAPI reads a body.
JSON_MAX = 64 << 20


class JsonBodyLimit:
    """ASGI middleware: a JSON request body is at most :data:`JSON_MAX` bytes.

    FastAPI reads a JSON body whole before the route's checks run (authentication
    included), so without this anyone could make the server hold gigabytes. A larger
    ``Content-Length`` gets 413 at once; a chunked body is cut off when it passes the
    limit (FastAPI then answers 400, "error parsing the body").
    """

    def __init__(self, app: ASGIApp, limit: int = JSON_MAX) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            response = error_response(
                413,
                "too_large",
                f"a JSON request body is at most {self.limit} bytes, not {declared}",
                "Send less in one request (smaller batches).",
                request_id=str(scope.get("state", {}).get("request_id", "")),
            )
            await response(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise TooLargeError(f"a JSON request body is at most {self.limit} bytes")
            return message

        await self.app(scope, bounded, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return b"json" in value.lower()
    return False
