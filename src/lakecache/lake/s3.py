"""A lake in an S3 bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...).

Only :func:`lakecache.lake.open_lake` imports this module, so botocore loads
only when an ``s3://`` lake is used, and then only when a call needs it.

Design choices:

* GETs go on plain SigV4-signed keep-alive connections (:mod:`lakecache.lake.gets`):
  a pull or a fill is hundreds of ranged GETs, and botocore's per-call CPU
  was a large share of theirs. With an endpoint, keys and a region given,
  botocore is not even imported until a call other than a GET is made.
* One botocore client per lake, made on first use: clients are thread-safe, and
  reusing one keeps its pool of up to ``max_pool`` keep-alive connections warm.
* Path-style addressing and SigV4, which every S3-compatible server accepts
  (SeaweedFS refuses SigV2, which boto3 may pick for a custom endpoint).
* botocore's "standard" retry mode retries connection errors, timeouts,
  throttling and 5xx with jittered exponential backoff; when it gives up, the
  error becomes :class:`LakeUnreachableError` naming the endpoint. A body that
  breaks mid-stream is not retried by botocore, so reads resume at the last byte
  received, up to ``retries`` times.
* A server hands clients presigned URLs (:meth:`S3Lake.presign`). SigV4 signs
  the Host, so a URL works only at the address it names: they are signed for
  ``public_endpoint`` (what clients reach) by a second client that never sends
  a request, while the lake's own requests go to ``endpoint``.
* boto3's own checksums (CRC32 on every upload and download since botocore 1.36)
  are asked for only where S3 requires them: lakecache names objects by their
  BLAKE3 hash and checks it on read, so they would cost CPU for nothing, and
  some S3-compatible servers mishandle the trailing-checksum encoding.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, NoReturn

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from lakecache.errors import (
    InvalidPathError,
    LakeError,
    LakeUnreachableError,
    ObjectNotFoundError,
    UserError,
)
from lakecache.lake import gets
from lakecache.lake.base import ObjectInfo, check_key
from lakecache.urls import without_userinfo

if TYPE_CHECKING:
    from lakecache.settings import Settings

MiB = 1024 * 1024
#: S3 refuses parts smaller than this (except the last one).
MIN_PART_SIZE = 5 * MiB
#: S3 allows at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: Parts of one ``put_file`` in flight at once; memory is about (this + 1) x part size.
PART_CONCURRENCY = 4
#: delete_objects takes at most this many keys per request.
DELETE_BATCH = 1000

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Errors a broken connection raises while reading a body; botocore does not retry these.
_STREAM_ERRORS = (BotoConnectionError, HTTPClientError)
# The same, read from the http.client response under them (a reset, a timeout, a short body).
_READ_ERRORS = (*_STREAM_ERRORS, OSError, http.client.HTTPException)


class S3Lake:
    """Objects under ``prefix`` in one S3 bucket. Safe to share between threads."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        public_endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        profile: str | None = None,
        retries: int = 5,
        timeout: float = 30.0,
        max_pool: int = 64,
        part_size: int = 16 * MiB,
        page_size: int = 1000,
    ) -> None:
        if not bucket:
            raise UserError("an S3 lake needs a bucket name", hint="Use s3://bucket/prefix.")
        if (access_key is None) != (secret_key is None):
            raise UserError(
                "give both the S3 access key and the secret key, or neither",
                hint="Set both LAKECACHE_S3_ACCESS_KEY and LAKECACHE_S3_SECRET_KEY, "
                "or use AWS_* variables or a profile.",
            )
        if part_size < MIN_PART_SIZE:
            raise UserError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part)")
        self.bucket = bucket
        stripped = prefix.strip("/")
        #: Prepended to every key: "" or "some/prefix/".
        self.prefix = stripped + "/" if stripped else ""
        self.retries = max(1, retries)
        self.part_size = part_size
        self.page_size = page_size
        self.max_pool = max_pool
        self.url = f"s3://{bucket}/{stripped}"

        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._boto: _Boto | None = None
        self._boto_lock = threading.Lock()
        self._timeout = timeout
        self._gets: gets.SignedGets | None = None
        plain_region = region or _plain_region(profile)
        self._boto_args = (profile, access_key, secret_key, endpoint, public_endpoint, plain_region)
        if (
            endpoint is not None
            and access_key is not None
            and secret_key is not None
            and plain_region is not None
            and not gets.proxied(endpoint)
        ):
            # Everything a GET needs is given: botocore loads (about 0.4 s of CPU) only
            # when a call other than a GET is made. A fill or a pull makes none.
            _check_url(endpoint, "s3_endpoint")
            if public_endpoint is not None:
                _check_url(public_endpoint, "s3_public_endpoint")
            keys = gets.Credentials(access_key, secret_key)
            self._gets = gets.SignedGets(
                endpoint,
                bucket,
                plain_region,
                lambda: keys,
                timeout=timeout,
                attempts=self.retries,
                verify=os.environ.get("AWS_CA_BUNDLE") or True,
            )
            #: The endpoint for messages; any user:password@ in a custom URL is dropped.
            self.endpoint = without_userinfo(endpoint)
            #: The endpoint presigned URLs name (the same as :attr:`endpoint` unless given).
            self.public_endpoint = without_userinfo(public_endpoint or endpoint)
        else:
            boto = self._botocore()
            self.endpoint = without_userinfo(boto.client.meta.endpoint_url)
            self.public_endpoint = without_userinfo(boto.signer.meta.endpoint_url)
            self._gets = _signed_gets(
                boto.session,
                boto.client.meta.endpoint_url,
                bucket,
                boto.client.meta.region_name,
                timeout,
                self.retries,
            )

    def _botocore(self) -> _Boto:
        """The botocore session and clients, made on first use (see __init__)."""
        boto = self._boto
        if boto is not None:
            return boto
        with self._boto_lock:
            if self._boto is None:
                self._boto = _make_botocore(
                    *self._boto_args,
                    max_pool=self.max_pool,
                    retries=self.retries,
                    timeout=self._timeout,
                )
            return self._boto

    def prepare_writes(self) -> None:
        """Make the botocore client now (a caller about to write): the first PUT won't wait."""
        self._botocore()

    @property
    def _client(self) -> Any:
        return self._botocore().client

    @property
    def _signer(self) -> Any:
        return self._botocore().signer

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Lake:
        """Open the lake named by ``settings.lake_url`` (``s3://bucket/optional/prefix``)."""
        url = settings.lake_url
        if not url.startswith("s3://"):
            raise UserError(f"not an S3 lake URL: {url!r}", hint="Use s3://bucket/prefix.")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise UserError(f"no bucket in lake URL {url!r}", hint="Use s3://bucket/prefix.")
        return cls(
            bucket,
            prefix,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            public_endpoint=settings.s3_public_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            profile=settings.s3_profile,
            retries=settings.lake_retries,
            timeout=settings.lake_timeout,
            # Each worker may have a few parts in flight; keep a connection for each.
            max_pool=max(64, settings.workers * PART_CONCURRENCY),
            part_size=max(settings.part_size, MIN_PART_SIZE),
        )

    def __repr__(self) -> str:
        return f"S3Lake({self.url!r}, endpoint={self.endpoint!r})"

    # -- helpers -------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _executor(self) -> ThreadPoolExecutor:
        """A pool for fan-out (HEADs, parts); made on first use, one per lake."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_pool, thread_name_prefix="s3lake")
            return self._pool

    def close(self) -> None:
        """Release the worker threads and connections. The lake is unusable afterwards."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._gets is not None:
            self._gets.close()
        boto = self._boto
        if boto is not None:
            boto.client.close()
            if boto.signer is not boto.client:
                boto.signer.close()

    def _raise(self, exc: Exception, op: str, key: str | None = None) -> NoReturn:
        """Turn a boto3/botocore error into a lakecache error; never leaks credentials."""
        what = f"{op} {key}" if key is not None else op
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            self._refused(
                str(error.get("Code", "Unknown")), status, error.get("Message", ""), op, key
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            raise LakeUnreachableError(
                f"lake endpoint {self.endpoint} unreachable after {self.retries} attempts: "
                f"{what}: {exc}"
            ) from None
        if isinstance(exc, NoCredentialsError):
            raise LakeError(
                f"no S3 credentials found for lake {self.url} at {self.endpoint}",
                hint="Set LAKECACHE_S3_ACCESS_KEY and LAKECACHE_S3_SECRET_KEY, "
                "the AWS_* variables, or an AWS profile.",
            ) from None
        raise LakeError(f"lake {self.url} at {self.endpoint}: {what} failed: {exc}") from None

    def _refused(
        self, code: str, status: int | None, message: str, op: str, key: str | None
    ) -> NoReturn:
        """The error for an S3 answer that refused ``op`` (botocore's or a signed GET's)."""
        what = f"{op} {key}" if key is not None else op
        if code in _NOT_FOUND_CODES and key is not None:
            raise ObjectNotFoundError(f"object {key} not found in lake {self.url}") from None
        if code == "NoSuchBucket" or (code == "404" and key is None):
            raise LakeError(
                f"bucket {self.bucket} does not exist at {self.endpoint} ({what})",
                hint="Create the bucket, or fix the lake URL.",
            ) from None
        hint = (
            "Check the S3 credentials and the bucket's permissions."
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")
            else None
        )
        raise LakeError(
            f"lake {self.url} at {self.endpoint}: {what} failed: {code} "
            f"(HTTP {status}) {message}".rstrip(),
            hint=hint,
        ) from None

    # -- writes ----------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        full = self._key(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "put", key)

    def put_file(self, key: str, fileobj: BinaryIO, size: int) -> None:
        """Stream ``size`` bytes; one PUT up to ``part_size``, else a multipart upload.

        Parts are read one at a time and at most :data:`PART_CONCURRENCY` are
        uploaded at once, so memory stays near ``(PART_CONCURRENCY + 1) * part_size``.
        Any failure aborts the upload, so no half object and no orphan parts remain.
        """
        full = self._key(key)
        if size <= self.part_size:
            data = _read_exactly(fileobj, size, key)
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
            except (BotoCoreError, ClientError) as exc:
                self._raise(exc, "put", key)
            return

        # Grow the part for huge files, to stay within S3's 10,000 parts.
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=full)[
                "UploadId"
            ]
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "put", key)

        def upload(number: int, body: bytes) -> dict[str, Any]:
            response = self._client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        pool = self._executor()
        pending: set[Future[dict[str, Any]]] = set()
        parts: list[dict[str, Any]] = []
        try:
            remaining, number = size, 0
            while remaining > 0:
                body = _read_exactly(fileobj, min(part_size, remaining), key, size - remaining)
                remaining -= len(body)
                number += 1
                pending.add(pool.submit(upload, number, body))
                del body
                if len(pending) >= PART_CONCURRENCY:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    parts.extend(f.result() for f in done)
            done, pending = wait(pending)
            parts.extend(f.result() for f in done)
            parts.sort(key=lambda p: p["PartNumber"])
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            for f in pending:
                f.cancel()
            wait(pending)
            # The original error matters more; a lifecycle rule can reap leftover parts.
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                )
            if isinstance(exc, BotoCoreError | ClientError):
                self._raise(exc, "put", key)
            raise

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in batches of 1000 (one request each); missing keys are not an error."""
        batch: list[dict[str, str]] = []
        for key in keys:
            batch.append({"Key": self._key(key)})
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "delete")
        errors = [e for e in response.get("Errors", []) if e.get("Code") not in _NOT_FOUND_CODES]
        if errors:
            first = errors[0]
            key = str(first.get("Key", ""))[len(self.prefix) :]
            raise LakeError(
                f"lake {self.url} at {self.endpoint}: could not delete {len(errors)} object(s), "
                f"first {key}: {first.get('Code')} {first.get('Message', '')}".rstrip()
            )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, demo, benchmark)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                self._raise(exc, "head bucket")
        except BotoCoreError as exc:
            self._raise(exc, "head bucket")
        region = self._client.meta.region_name
        extra: dict[str, Any] = {}
        if region and region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(Bucket=self.bucket, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                self._raise(exc, "create bucket")
        except BotoCoreError as exc:
            self._raise(exc, "create bucket")

    # -- for a server: URLs its clients use, multipart uploads they send parts of ---

    def presign(self, op: str, key: str, expires: int, **params: Any) -> str:
        """A URL that lets its holder make the S3 request ``op`` on ``key`` for ``expires`` s.

        ``op`` is a boto3 operation (``get_object``, ``put_object``, ``upload_part``)
        and ``params`` its other parameters (``ContentLength``, ``UploadId``, ...).
        Signed here, without a request, for :attr:`public_endpoint`.
        """
        try:
            url: str = self._signer.generate_presigned_url(
                op,
                Params={"Bucket": self.bucket, "Key": self._key(key), **params},
                ExpiresIn=expires,
            )
        except BotoCoreError as exc:  # no credentials to sign with, an unknown operation
            self._raise(exc, "presign", key)
        return url

    def create_multipart(self, key: str) -> str:
        """Start a multipart upload of ``key`` (its parts go to presigned URLs); its id."""
        try:
            out = self._client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "put", key)
        return str(out["UploadId"])

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]], *, if_absent: bool = False
    ) -> bool:
        """Join the uploaded parts, given as (number, ETag), into the object ``key``.

        With ``if_absent``, only if ``key`` does not exist yet (``If-None-Match: *``):
        returns False, leaving the object as it was, when it does.
        """
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in sorted(parts)]},
                **extra,
            )
        except ClientError as exc:
            if if_absent and exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            self._raise(exc, "put", key)
        except BotoCoreError as exc:
            self._raise(exc, "put", key)
        return True

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and the parts uploaded so far."""
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "abort", key)

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Abort multipart uploads under this lake's prefix started before ``older_than`` ago.

        A commit killed midway (or a client that stopped between its presigned
        parts) leaves its upload open: S3 keeps the parts, billed, until
        aborted. A bucket lifecycle rule does the same; this works without one.
        """
        cutoff = datetime.now(UTC) - older_than
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        dropped = 0
        try:
            while True:
                page = self._client.list_multipart_uploads(**args)
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] < cutoff:
                        dropped += self._abort_one(upload["Key"], upload["UploadId"])
                if not page.get("IsTruncated"):
                    return dropped
                args["KeyMarker"] = page.get("NextKeyMarker", "")
                args["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "abort", None)

    def _abort_one(self, full_key: str, upload_id: str) -> int:
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return 0  # completed or aborted since it was listed
            raise
        return 1

    # -- reads -----------------------------------------------------------------

    def _open(self, key: str, start: int, length: int | None) -> tuple[Any, int]:
        """GET the object or a range of it: (streaming body, its length)."""
        if self._gets is not None:
            try:
                return self._gets.open(self._key(key), start, length)
            except gets.HTTPError as exc:
                if exc.status == 416 or exc.code == "InvalidRange":
                    self._short(key, start, length, 0)
                self._refused(exc.code, exc.status, exc.message, "get", key)
            except gets.Unreachable as exc:
                raise LakeUnreachableError(
                    f"lake endpoint {self.endpoint} unreachable after {exc.attempts} "
                    f"attempts: get {key}: {exc}"
                ) from None
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if length is not None:
            args["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            args["Range"] = f"bytes={start}-"
        try:
            response = self._client.get_object(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                self._short(key, start, length, 0)
            self._raise(exc, "get", key)
        except BotoCoreError as exc:
            self._raise(exc, "get", key)
        return response["Body"], int(response["ContentLength"])

    def _broken(self, error: Exception, key: str) -> NoReturn:
        """The error for a body that kept breaking mid-read, ``retries`` times."""
        if isinstance(error, _STREAM_ERRORS):
            self._raise(error, "get", key)
        raise LakeUnreachableError(
            f"lake endpoint {self.endpoint} unreachable after {self.retries} "
            f"attempts: get {key}: {error}"
        ) from None

    def _short(self, key: str, start: int, length: int | None, got: int) -> NoReturn:
        wanted = "the rest" if length is None else f"{length} bytes"
        raise ObjectNotFoundError(
            f"object {key} in lake {self.url} is shorter than expected "
            f"(wanted {wanted} at {start}, got {got})"
        )

    def _size(self, key: str) -> int:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "head", key)
        return int(response["ContentLength"])

    def _empty_range(self, key: str, start: int, length: int | None) -> bool:
        """Whether the request is an empty range of an existing object (which S3 cannot GET)."""
        if length == 0:
            if start > self._size(key):
                self._short(key, start, 0, 0)
            return True
        return False

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """One GET (ranged when asked); a range that ends past the object raises."""
        _check_range(start, length)
        if self._empty_range(key, start, length):
            return b""
        return b"".join(self.iter_chunks(key, start, length, chunk_size=self.part_size))

    def iter_chunks(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Stream a (ranged) GET in ``chunk_size`` pieces, resuming where a broken body stopped."""
        _check_range(start, length)
        if self._empty_range(key, start, length):
            return
        try:
            body, expected = self._open(key, start, length)
        except ObjectNotFoundError:
            # S3 refuses a range starting at the very end; reading "the rest" there is empty.
            if length is None and start and start == self._size(key):
                return
            raise
        if length is not None and expected != length:
            body.close()
            self._short(key, start, length, expected)
        position, end, failures = start, start + expected, 0
        try:
            while position < end:
                try:
                    chunk = body.read(min(chunk_size, end - position))
                except _READ_ERRORS as exc:
                    failures += 1
                    body.close()
                    if failures >= self.retries:
                        self._broken(exc, key)
                    body, got = self._open(key, position, end - position)
                    if got != end - position:
                        body.close()
                        self._short(key, start, length, position - start + got)
                    continue
                if not chunk:
                    self._short(key, start, length, position - start)
                position += len(chunk)
                yield chunk
        finally:
            body.close()

    def get_into(self, key: str, start: int, buf: memoryview) -> None:
        """Fill ``buf`` with the ``len(buf)`` bytes of ``key`` from ``start`` (one ranged GET).

        The body goes from the socket straight into ``buf``: no new buffer per
        read, so a caller that reuses one buffer for every range pays no
        allocation, page faults or extra copy. A broken body resumes at the last
        byte received, like :meth:`iter_chunks`; a range past the end raises
        :class:`ObjectNotFoundError`.
        """
        length = len(buf)
        _check_range(start, length)
        if self._empty_range(key, start, length):
            return
        position, end, failures = start, start + length, 0
        body, got = self._open(key, start, length)
        try:
            if got != length:
                self._short(key, start, length, got)
            while position < end:
                try:
                    n = _readinto(body, buf[position - start :])
                except _READ_ERRORS as exc:
                    n, error = 0, exc
                else:
                    error = None
                if n:
                    position += n
                    continue
                # Broken, or ended before its length (a connection closed midway).
                failures += 1
                body.close()
                if failures >= self.retries:
                    if error is None:
                        self._short(key, start, length, position - start)
                    self._broken(error, key)
                body, got = self._open(key, position, end - position)
                if got != end - position:
                    self._short(key, start, length, position - start + got)
            _release(body)
        finally:
            body.close()

    def exists(self, keys: Iterable[str]) -> set[str]:
        """Which keys exist, by parallel HEAD requests (up to ``max_pool`` at once).

        HEADs cost one request per asked key whatever the lake holds; listing by
        prefix would cost one request per 1000 keys *stored* under the prefix,
        which grows with the lake. Callers ask about a commit's packs, a few
        hundred at most since packs are big, so HEADs stay cheap and never scan.
        """
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if len(wanted) <= 1:
            return {k for k in wanted if self._exists(k)}
        found = self._executor().map(self._exists, wanted)
        return {k for k, ok in zip(wanted, found, strict=True) if ok}

    def _exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                return False
            self._raise(exc, "head", key)
        except BotoCoreError as exc:
            self._raise(exc, "head", key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key (UTF-8 byte) order.

        ListObjectsV2 pages of ``page_size`` keys are gathered and sorted before
        the first is yielded: S3 itself lists in byte order, but SeaweedFS lists
        a folder's contents right after the folder's name ("a", "a/b", "a-"),
        and the contract promises one order on every store. Lakes hold few keys
        (packs are large), so holding one listing in memory is cheap.
        """
        if "\x00" in prefix or prefix.startswith("/"):
            raise InvalidPathError(f"invalid lake prefix {prefix!r}")
        out: list[ObjectInfo] = []
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": self.page_size,
        }
        try:
            while True:
                response = self._client.list_objects_v2(**args)
                out.extend(
                    ObjectInfo(
                        obj["Key"][len(self.prefix) :],
                        int(obj["Size"]),
                        obj["LastModified"].astimezone(UTC),
                    )
                    for obj in response.get("Contents", ())
                )
                token = response.get("NextContinuationToken")
                if not response.get("IsTruncated") or not token:
                    break
                args["ContinuationToken"] = token
        except (BotoCoreError, ClientError) as exc:
            self._raise(exc, "list", prefix)
        out.sort(key=lambda o: o.key.encode())
        yield from out


def _check_range(start: int, length: int | None) -> None:
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"invalid range: start={start}, length={length}")


def _raw_response(body: Any) -> Any:
    """The http.client response under botocore's streaming body, or None if it is not one."""
    fp = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    return fp if callable(getattr(fp, "readinto", None)) else None


def _readinto(body: Any, view: memoryview) -> int:
    """Read the next bytes of ``body`` into ``view``; 0 at the end of the body.

    botocore's body reads through urllib3, whose ``readinto`` reads into a new
    buffer and copies; the http.client response under it reads into ``view``
    itself. urllib3 adds nothing to an undecoded body but its byte count
    (the caller checks the length) and releasing the connection at the end
    (:func:`_release`). A body of any other kind is read and copied.
    """
    if isinstance(body, gets.Body):
        return body.readinto(view)
    fp = _raw_response(body)
    if fp is not None:
        return int(fp.readinto(view))
    chunk = body.read(min(len(view), 8 * MiB))
    view[: len(chunk)] = chunk
    return len(chunk)


def _release(body: Any) -> None:
    """Give a body read to its end through :func:`_readinto` its connection back to the pool."""
    raw = getattr(body, "_raw_stream", None)
    if _raw_response(body) is not None and raw is not None:
        raw.release_conn()


def _read_exactly(fileobj: BinaryIO, n: int, key: str, offset: int = 0) -> bytes:
    """Read ``n`` bytes, or raise if the source ends first (a file that shrank)."""
    data = fileobj.read(n)
    if len(data) < n:
        parts = [data]
        got = len(data)
        while got < n:
            more = fileobj.read(n - got)
            if not more:
                raise LakeError(
                    f"source ended {n - got} bytes early at offset {offset + got} "
                    f"while writing {key}"
                )
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


#: botocore's data loaders, one per data path in this process (see _shared_loader).
_LOADERS: dict[str | None, Any] = {}


def _shared_loader(session: Any) -> Any:
    """The process's botocore data loader for the session's data path.

    A loader keeps the service models it has read; a new session's own loader
    reads and parses S3's again (about 0.2 s of CPU per lake opened: each
    Hub, each DataLoader worker's reader, each streaming pass).
    """
    path = session.get_config_variable("data_path")
    loader = _LOADERS.get(path)
    if loader is None:
        import botocore.loaders

        loader = _LOADERS.setdefault(path, botocore.loaders.create_loader(path))
    return loader


class _Boto(NamedTuple):
    session: Any
    client: Any
    #: The client that presigns URLs: for the public endpoint when one is given.
    signer: Any


def _make_botocore(
    profile: str | None,
    access_key: str | None,
    secret_key: str | None,
    endpoint: str | None,
    public_endpoint: str | None,
    region: str | None,
    *,
    max_pool: int,
    retries: int,
    timeout: float,
) -> _Boto:
    import botocore.session
    from botocore.config import Config

    # A botocore session, not boto3's: boto3 adds nothing a lake uses, and its
    # S3 client set-up imports s3transfer for the upload_file helpers (about a
    # tenth of a second of every command that moves a byte). Same credential
    # chain (keys given, AWS_* variables, profile, instance role).
    try:
        session = botocore.session.Session(profile=profile)
        session.register_component("data_loader", _shared_loader(session))
        if access_key is not None and secret_key is not None:
            session.set_credentials(access_key, secret_key)
        session_region = session.get_config_variable("region")
    except ProfileNotFound:
        raise UserError(
            f"AWS profile {profile!r} not found",
            hint="Fix LAKECACHE_S3_PROFILE, or add the profile to ~/.aws/config.",
        ) from None
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        max_pool_connections=max_pool,
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = region or session_region or "us-east-1"
    client = _client(session, endpoint, region, config, "s3_endpoint")
    signer = client
    if public_endpoint and public_endpoint != endpoint:
        signer = _client(session, public_endpoint, region, config, "s3_public_endpoint")
    return _Boto(session, client, signer)


def _plain_region(profile: str | None) -> str | None:
    """The region botocore would find without loading it, or None where only it can tell.

    ``AWS_DEFAULT_REGION`` (botocore's variable), or S3's default when no AWS
    config file or profile could name another.
    """
    env = os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    if profile is not None or os.environ.get("AWS_PROFILE"):
        return None
    config = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    return None if os.path.exists(config) else "us-east-1"


def _check_url(url: str, what: str) -> None:
    """UserError for an endpoint that is not http(s)://host[:port], naming the setting only."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"{what} is not a URL", hint=f"Write {what} as http(s)://host[:port].")


def _client(session: Any, endpoint: str | None, region: str, config: Any, what: str) -> Any:
    """A botocore S3 client for ``endpoint`` (None: AWS's), or UserError for a malformed one.

    The message names the setting, not its value: a value may hold credentials.
    """
    try:
        return session.create_client("s3", endpoint_url=endpoint, region_name=region, config=config)
    except ValueError:
        raise UserError(
            f"{what} is not a URL", hint=f"Write {what} as http(s)://host[:port]."
        ) from None


def _signed_gets(
    session: Any, endpoint: str, bucket: str, region: str, timeout: float, attempts: int
) -> gets.SignedGets | None:
    """Plain signed GETs for this lake (lake/gets.py), or None where botocore must do them.

    None behind an HTTP proxy (botocore knows proxies), or without credentials
    (botocore then says what is missing). Credentials come from botocore's
    chain, so keys given, AWS_* variables, profiles and refreshed temporary
    credentials all apply; the CA bundle is botocore's setting too.
    """
    if gets.proxied(endpoint):
        return None
    creds = session.get_credentials()
    if creds is None:
        return None

    def current() -> gets.Credentials:
        frozen = creds.get_frozen_credentials()
        return gets.Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    verify: str | bool = session.get_config_variable("ca_bundle") or True
    try:
        return gets.SignedGets(
            endpoint, bucket, region, current, timeout=timeout, attempts=attempts, verify=verify
        )
    except ValueError:
        return None
