"""The lake, reached through a lakecache server that holds its credentials.

:class:`RemoteLake` keeps the :class:`~lakecache.lake.Lake` contract for what
commit and pull need (put, put_file, get, iter_chunks, exists), so the data
layer runs unchanged. How the bytes travel depends on the server's lake
(``GET /api/v1/lake`` says which):

* ``presign`` (an S3 lake): the server signs short-lived URLs for one key each
  (SigV4, :data:`~lakecache.server.routes.lake.URL_TTL` seconds); bytes go
  between this machine and S3 directly, over a pool of keep-alive connections
  (urllib3). A GET URL is kept for its lifetime and reused for every range of
  that object; a PUT URL is signed with its exact size and ``If-None-Match: *``,
  so it can never replace an object (S3 answers 412). Files larger than the
  part size go multipart: the server starts the upload and signs each part,
  this side uploads parts in parallel (bounded memory: a few parts in flight)
  and the server completes it, or aborts it on any failure.
* ``stream`` (a local-folder lake): the same operations go to the server's
  ``/api/v1/lake/objects/KEY``, which streams them to and from its folder.

A key that exists already is skipped, unless it holds blobs this user's
datasets do not hold yet: then the bytes go to the server, which hashes them
and stores nothing (``prove``), because knowing a digest grants nothing.

The lake's credentials never reach this side: a presigned URL carries the
access key's *id* and a signature valid for one method on one key, never the
secret. URLs are left out of every message (a signature is a capability for
its lifetime); errors name the endpoint and the key.

Listing and deleting are the server's business (garbage collection runs
there), so :meth:`RemoteLake.list` and :meth:`RemoteLake.delete` refuse.
"""

from __future__ import annotations

import builtins
import contextlib
import http.client
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote, urlsplit

import httpx
import urllib3

from lakecache.client.connection import ServerConnection
from lakecache.errors import LakeError, LakeUnreachableError, ObjectNotFoundError, UserError
from lakecache.lake.base import ObjectInfo, check_key

#: Parts of one upload in flight at once; memory is about (this + 1) x the part size.
PART_CONCURRENCY = 4
#: A presigned URL is used until this many seconds before it expires.
URL_MARGIN = 60.0
#: Keys per exists request.
EXISTS_BATCH = 1000

_TRANSIENT = (
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.SSLError,
    OSError,
)
_S3_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class RemoteLake:
    """The server's lake, without its credentials. Thread-safe; made by the hub."""

    def __init__(
        self,
        conn: ServerConnection,
        *,
        workers: int = 16,
        retries: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self._conn = conn
        #: For messages: where the lake is, never a credential.
        self.url = f"the lake of {conn.url}"
        self.retries = max(1, retries)
        self._info: dict[str, Any] | None = None
        self._get_urls: dict[str, tuple[str, float]] = {}
        #: Keys the server serves itself, range by range (see _through_server).
        self._server_keys: set[str] = set()
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(32, workers * PART_CONCURRENCY),
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        self._workers = max(PART_CONCURRENCY, workers)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"RemoteLake({self._conn.url!r})"

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.clear()

    # -- what the server offers --------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """The server's ``GET /lake``: ``mode``, ``part_size``, ``url_ttl_seconds``..."""
        if self._info is None:
            self._info = self._conn.call("GET", "/lake")
        return self._info

    @property
    def streams(self) -> bool:
        """True when the server streams the bytes itself (a local-folder lake)."""
        return bool(self.info["mode"] == "stream")

    @property
    def part_size(self) -> int:
        return int(self.info["part_size"])

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; a key the lake holds already is left as it is."""
        check_key(key)
        if self.streams:
            self._conn.call("PUT", _object_path(key), params=self._scope(), content=data)
            return
        self._put_presigned(key, data)

    def put_file(self, key: str, fileobj: BinaryIO, size: int) -> None:
        """Stream ``size`` bytes of ``fileobj``; beyond the part size, as a multipart upload."""
        check_key(key)
        if self.streams:
            self._conn.call(
                "PUT",
                _object_path(key),
                params=self._scope(),
                content=_chunks_of(fileobj, size, key, 1 << 20),
                headers={"Content-Length": str(size)},
            )
        elif size <= self.part_size:
            self._put_presigned(key, _read_exactly(fileobj, size, key))
        else:
            self._put_multipart(key, fileobj, size)

    def _put_presigned(self, key: str, data: bytes) -> None:
        for attempt in (0, 1):
            item = self._presign([{"method": "PUT", "key": key, "size": len(data)}])[0]
            if item["status"] == "exists":
                return
            if item["status"] == "prove":
                self._prove(key, data, len(data))
                return
            status, resp = self._send("PUT", item["url"], key, data, item.get("headers"))
            if status == 403 and attempt == 0:
                continue  # expired while queued: sign again, once
            if status == 412:
                return  # If-None-Match: another writer stored the key first; never replaced
            if status != 200:
                self._refused("PUT", key, status, resp)
            return

    def _prove(self, key: str, content: bytes | Iterator[bytes], size: int) -> None:
        """Send the bytes of a key that exists to the server, which hashes them and stores
        nothing: a blob is yours to name only once the server has seen you hold it."""
        self._conn.call(
            "PUT",
            _object_path(key),
            params=self._scope(),
            content=content,
            headers={"Content-Length": str(size)},
        )

    def _put_multipart(self, key: str, fileobj: BinaryIO, size: int) -> None:
        scope = self._conn.scope()
        started = self._conn.call(
            "POST",
            "/lake/multipart",
            json={"datasets": scope, "key": key, "size": size, "part_size": self.part_size},
        )
        if started["status"] == "exists":
            return
        if started["status"] == "prove":
            self._prove(key, _chunks_of(fileobj, size, key, 1 << 20), size)
            return
        upload_id = started["upload_id"]
        urls = {p["number"]: p["url"] for p in started["parts"]}
        sizes = {p["number"]: p["size"] for p in started["parts"]}
        done: dict[int, str] = {}
        pending: set[Future[tuple[int, str]]] = set()

        def upload(number: int, body: bytes) -> tuple[int, str]:
            for attempt in (0, 1):
                status, resp = self._send("PUT", urls[number], key, body)
                if status == 403 and attempt == 0:
                    urls.update(self._resign_parts(scope, key, upload_id, size, started, [number]))
                    continue
                if status != 200:
                    self._refused("PUT", key, status, resp)
                etag = resp.headers.get("ETag")
                if not etag:
                    raise LakeError(f"the lake gave no ETag for a part of {key}")
                return number, etag
            raise AssertionError("unreachable")

        pool = self._executor()
        try:
            for number in sorted(sizes):
                body = _read_exactly(fileobj, sizes[number], key)
                pending.add(pool.submit(upload, number, body))
                del body
                if len(pending) >= PART_CONCURRENCY:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    done.update(f.result() for f in finished)
            finished, pending = wait(pending)
            done.update(f.result() for f in finished)
            self._conn.call(
                "POST",
                "/lake/multipart/complete",
                json={
                    "datasets": scope,
                    "key": key,
                    "upload_id": upload_id,
                    "parts": [{"number": n, "etag": done[n]} for n in sorted(done)],
                },
            )
        except BaseException:
            for f in pending:
                f.cancel()
            wait(pending)
            # The first error matters more; a lifecycle rule reaps what an abort leaves.
            with contextlib.suppress(Exception):
                self._conn.call(
                    "POST",
                    "/lake/multipart/abort",
                    json={"datasets": scope, "key": key, "upload_id": upload_id, "parts": []},
                )
            raise

    def _resign_parts(
        self,
        scope: builtins.list[str],
        key: str,
        upload_id: str,
        size: int,
        started: dict[str, Any],
        numbers: builtins.list[int],
    ) -> dict[int, str]:
        out = self._conn.call(
            "POST",
            "/lake/multipart/parts",
            json={
                "datasets": scope,
                "key": key,
                "upload_id": upload_id,
                "size": size,
                "part_size": started["part_size"],
                "numbers": numbers,
            },
        )
        return {p["number"]: p["url"] for p in out["parts"]}

    def delete(self, keys: Iterable[str]) -> None:
        self._server_only("delete")

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        self._server_only("cleaning up interrupted uploads")

    # -- reads -----------------------------------------------------------------------------------

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or ``length`` bytes from ``start`` (one ranged GET)."""
        _check_range(start, length)
        if length == 0:
            return b""
        if self._through_server(key):
            return b"".join(self.iter_chunks(key, start, length, chunk_size=8 << 20))
        for failure in range(self.retries):
            resp = self._open(key, start, length)
            try:
                data = resp.read()
            except _TRANSIENT as exc:
                resp.close()  # a half-read body: its connection cannot serve another request
                if failure + 1 == self.retries:
                    self._unreachable("GET", key, exc)
                time.sleep(min(2.0, 0.1 * 2**failure))
                continue
            resp.release_conn()
            if length is not None and len(data) != length:
                _short(key, start, length, len(data))
            return bytes(data)
        raise AssertionError("unreachable")

    def get_into(self, key: str, start: int, buf: memoryview) -> None:
        """Fill ``buf`` with the ``len(buf)`` bytes of ``key`` from ``start`` (one ranged GET).

        From S3 the body goes from the socket straight into ``buf`` (the
        http.client response under urllib3's), resuming at the last byte
        received when it breaks; through the server it is copied in.
        """
        length = len(buf)
        _check_range(start, length)
        if length == 0:
            return
        if self._through_server(key):
            got = 0
            for chunk in self._stream_chunks(key, start, length, 8 << 20):
                buf[got : got + len(chunk)] = chunk
                got += len(chunk)
            return
        position, end, failures = start, start + length, 0
        while position < end:
            resp = self._open(key, position, end - position)
            announced = resp.headers.get("Content-Length")
            if announced is not None and int(announced) != end - position:
                resp.close()  # S3 clipped the range: the object is shorter
                _short(key, start, length, position - start + int(announced))
            # urllib3's readinto reads into a new buffer and copies; its http.client
            # response reads into ``buf`` itself (the body is not encoded: no decoder).
            fp: Any = getattr(resp, "_fp", None)
            read = fp.readinto if callable(getattr(fp, "readinto", None)) else resp.readinto
            error: BaseException | None = None
            try:
                while position < end:
                    n = read(buf[position - start :])
                    if not n:
                        break  # the connection closed before the body's end
                    position += n
            except (*_TRANSIENT, http.client.HTTPException) as exc:
                error = exc
            if position == end:
                resp.release_conn()
                return
            resp.close()  # a half-read body: its connection cannot serve another request
            failures += 1
            if failures >= self.retries:
                self._unreachable("GET", key, error or ConnectionError("body ended early"))
            time.sleep(min(2.0, 0.1 * 2 ** (failures - 1)))

    def iter_chunks(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Stream the object (or a range), resuming where a broken body stopped."""
        _check_range(start, length)
        if length == 0:
            return
        if self._through_server(key):
            yield from self._stream_chunks(key, start, length, chunk_size)
            return
        position, end, failures = start, None if length is None else start + length, 0
        while True:
            resp = self._open(key, position, None if end is None else end - position)
            read_all = False
            try:
                for chunk in resp.stream(chunk_size, decode_content=False):
                    position += len(chunk)
                    yield chunk
                read_all = True
            except _TRANSIENT as exc:
                failures += 1
                if failures >= self.retries:
                    self._unreachable("GET", key, exc)
                continue
            finally:
                # Only a body read to its end leaves the connection fit for the pool; one
                # left midway (a broken stream, a caller that stopped) is closed instead.
                if read_all:
                    resp.release_conn()
                else:
                    resp.close()
            if end is not None and position != end:
                _short(key, start, length, position - start)
            return

    def _stream_chunks(
        self, key: str, start: int, length: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        headers = {}
        if length is not None:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            headers["Range"] = f"bytes={start}-"
        r = self._conn.stream("GET", _object_path(key), params=self._scope(), headers=headers)
        got = 0
        try:
            for chunk in r.iter_bytes(chunk_size):
                got += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:  # the server went away mid-body
            raise LakeUnreachableError(
                f"the lakecache server at {self._conn.url} stopped sending {key}: {exc}"
            ) from None
        finally:
            r.close()
        if length is not None and got != length:
            _short(key, start, length, got)

    def _open(self, key: str, start: int, length: int | None) -> Any:
        """A GET of ``key`` (a range of it) whose body is still to be read."""
        headers = {}
        if length is not None:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            headers["Range"] = f"bytes={start}-"
        signed_again = False
        for failure in range(self.retries):
            url = self._get_url(key)
            try:
                resp = self._http.request(
                    "GET",
                    url,
                    headers=headers,
                    preload_content=False,
                    decode_content=False,
                    redirect=False,
                )
            except _TRANSIENT as exc:
                if failure + 1 == self.retries:
                    self._unreachable("GET", key, exc)
                time.sleep(min(2.0, 0.1 * 2**failure))
                continue
            if resp.status in (200, 206):
                return resp
            body = resp.read()
            resp.release_conn()
            if resp.status == 404:
                raise ObjectNotFoundError(f"object {key} not found in {self.url}")
            if resp.status == 416:
                _short(key, start, length, 0)
            if resp.status == 403 and not signed_again:
                signed_again = True  # an expired URL: sign again, once
                with self._lock:
                    self._get_urls.pop(key, None)
                continue
            if resp.status >= 500 or resp.status == 429:
                time.sleep(min(2.0, 0.1 * 2**failure))
                continue
            self._refused("GET", key, resp.status, body)
        raise LakeUnreachableError(
            f"the lake at {self._endpoint(key)} kept failing GET {key} ({self.retries} attempts)"
        )

    def exists(self, keys: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        out: set[str] = set()
        for i in range(0, len(wanted), EXISTS_BATCH):
            answer = self._conn.call(
                "POST",
                "/lake/exists",
                json={"datasets": self._conn.scope(), "keys": wanted[i : i + EXISTS_BATCH]},
            )
            out.update(answer["keys"])
        return out

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._server_only("list")

    # -- helpers ------------------------------------------------------------------------------

    def _scope(self) -> builtins.list[tuple[str, str]]:
        return [("dataset", d) for d in self._conn.scope()]

    def _presign(self, items: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        answer = self._conn.call(
            "POST", "/lake/presign", json={"datasets": self._conn.scope(), "items": items}
        )
        return list(answer["items"])

    def _through_server(self, key: str) -> bool:
        """Whether reads of ``key`` go through the server: every key on a streamed
        lake, and on S3 a pack shared with datasets this user may not read (the
        server serves only the byte ranges of this dataset's blobs in it)."""
        if self.streams:
            return True
        self._get_url(key)
        with self._lock:
            return key in self._server_keys

    def _get_url(self, key: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._get_urls.get(key)
            if key in self._server_keys:
                return ""
        if cached is not None and cached[1] > now:
            return cached[0]
        signed = self._presign([{"method": "GET", "key": key}])[0]
        if signed.get("bearer"):
            with self._lock:
                self._server_keys.add(key)
            return ""
        url = signed["url"]
        ttl = float(self.info["url_ttl_seconds"])
        with self._lock:
            self._get_urls[key] = (url, now + max(ttl - URL_MARGIN, 1.0))
        return str(url)

    def _send(
        self, method: str, url: str, key: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One upload, retried on connection errors and 5xx; returns (status, response).

        ``headers`` are those the URL was signed with (``If-None-Match: *`` on a PUT).
        """
        for failure in range(self.retries):
            try:
                resp = self._http.request(
                    method,
                    url,
                    body=body,
                    headers={**(headers or {}), "Content-Length": str(len(body))},
                    redirect=False,
                )
            except _TRANSIENT as exc:
                if failure + 1 == self.retries:
                    self._unreachable(method, key, exc)
                time.sleep(min(2.0, 0.1 * 2**failure))
                continue
            if (resp.status >= 500 or resp.status == 429) and failure + 1 < self.retries:
                time.sleep(min(2.0, 0.1 * 2**failure))
                continue
            return resp.status, resp
        raise AssertionError("unreachable")

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="remote-lake")
            return self._pool

    def _endpoint(self, key: str) -> str:
        with self._lock:
            cached = self._get_urls.get(key)
        if cached is None:
            return "its endpoint"
        parts = urlsplit(cached[0])
        return f"{parts.scheme}://{parts.netloc}"

    def _unreachable(self, method: str, key: str, exc: BaseException) -> NoReturn:
        reason = str(exc).split("?")[0]  # urllib3 may quote the URL: keep the signature out
        raise LakeUnreachableError(
            f"{self.url}: {method} {key} failed after {self.retries} attempts: "
            f"{type(exc).__name__}: {reason}"
        ) from None

    def _refused(self, method: str, key: str, status: int, resp: Any) -> NoReturn:
        data = resp if isinstance(resp, bytes) else getattr(resp, "data", b"") or b""
        m = _S3_CODE.search(data)
        code = m.group(1).decode(errors="replace") if m else f"HTTP {status}"
        hint = (
            "A presigned URL was refused: the clocks of this machine and the lake may "
            "disagree, or the URL expired; run the command again."
            if status == 403
            else None
        )
        raise LakeError(f"{self.url} refused {method} {key}: {code} (HTTP {status})", hint=hint)

    def _server_only(self, what: str) -> NoReturn:
        raise UserError(
            f"{what} runs on the lakecache server at {self._conn.url}, not through it",
            hint="Ask the server's admin; clients only read and add objects.",
        )


def _object_path(key: str) -> str:
    return "/lake/objects/" + quote(key, safe="/")


def _check_range(start: int, length: int | None) -> None:
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"invalid range: start={start}, length={length}")


def _short(key: str, start: int, length: int | None, got: int) -> NoReturn:
    wanted = "the rest" if length is None else f"{length} bytes"
    raise ObjectNotFoundError(
        f"object {key} is shorter than expected (wanted {wanted} at {start}, got {got})"
    )


def _read_exactly(fileobj: BinaryIO, n: int, key: str) -> bytes:
    """Read ``n`` bytes, or raise if the source ends first (a file that shrank)."""
    parts, got = [], 0
    while got < n:
        more = fileobj.read(n - got)
        if not more:
            raise LakeError(f"source ended {n - got} bytes early while writing {key}")
        parts.append(more)
        got += len(more)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _chunks_of(fileobj: BinaryIO, size: int, key: str, chunk: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        data = _read_exactly(fileobj, min(chunk, left), key)
        left -= len(data)
        yield data
