"""The lake contract: every backend passes the same tests.

``lake`` runs each test on a local folder and on a real SeaweedFS S3 gateway.
The S3 lake uses S3's smallest part (5 MiB) and a page size of 100, so
multipart uploads and listing pagination run with little data.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fixtures.seaweed import drop_bucket, new_bucket

import lakecache.lake.s3 as s3mod
from lakecache.errors import (
    InvalidPathError,
    LakeError,
    LakeUnreachableError,
    ObjectNotFoundError,
    UserError,
)
from lakecache.lake import Lake, ObjectInfo, open_lake
from lakecache.lake.base import read_into
from lakecache.lake.local import LocalLake
from lakecache.lake.s3 import S3Lake
from lakecache.services.seaweed import SeaweedServer
from lakecache.settings import Settings

MiB = 1024 * 1024
PART = 5 * MiB
PAGE = 100


def make_s3_lake(seaweed: SeaweedServer, bucket: str, **kwargs: Any) -> S3Lake:
    args: dict[str, Any] = {"part_size": PART, "page_size": PAGE, **kwargs}
    return S3Lake(
        bucket,
        "pfx",
        endpoint=seaweed.endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        **args,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    if request.param == "local":
        yield LocalLake(tmp_path / "lake")
        return
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    bucket = new_bucket(seaweed)
    s3 = make_s3_lake(seaweed, bucket)
    try:
        yield s3
    finally:
        s3.close()
        drop_bucket(seaweed, bucket)


@pytest.fixture
def s3_lake(seaweed: SeaweedServer, s3_bucket: str) -> Iterator[S3Lake]:
    s3 = make_s3_lake(seaweed, s3_bucket)
    yield s3
    s3.close()


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    block = seed.to_bytes(8, "little")
    while len(out) < n:
        block = hashlib.blake2b(block).digest()
        out += block * 64
    return bytes(out[:n])


class BoundedReader:
    """A source that records how much ``put_file`` asks for at once, to prove it streams."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.largest_read = 0

    def read(self, n: int = -1) -> bytes:
        assert n is not None and n >= 0, "put_file must not read the whole source at once"
        self.largest_read = max(self.largest_read, n)
        return self.f.read(n)


# -- contract ------------------------------------------------------------------


def test_satisfies_protocol(lake: Lake) -> None:
    assert isinstance(lake, Lake)
    assert lake.url


def test_put_get_roundtrip(lake: Lake) -> None:
    data = payload(100_000)
    lake.put("a/b/obj", data)
    lake.put("empty", b"")
    assert lake.get("a/b/obj") == data
    assert lake.get("empty") == b""
    assert b"".join(lake.iter_chunks("a/b/obj", chunk_size=30_000)) == data


def test_ranged_get(lake: Lake) -> None:
    data = payload(10_000)
    lake.put("r", data)
    assert lake.get("r", 0, 10) == data[:10]
    assert lake.get("r", 4321, 1000) == data[4321:5321]
    assert lake.get("r", 9990, 10) == data[9990:]
    assert lake.get("r", 9990) == data[9990:]
    assert lake.get("r", 500, 0) == b""
    assert lake.get("r", 10_000) == b""  # the rest, from the very end


@pytest.mark.parametrize(("start", "length"), [(9995, 10), (10_000, 1), (20_000, 5)])
def test_ranged_get_past_end_raises(lake: Lake, start: int, length: int) -> None:
    lake.put("r", payload(10_000))
    with pytest.raises(ObjectNotFoundError, match="shorter"):
        lake.get("r", start, length)
    with pytest.raises(ObjectNotFoundError):
        list(lake.iter_chunks("r", start, length))


def test_read_into_fills_the_callers_buffer(lake: Lake) -> None:
    """read_into (a pull's ranged GETs) writes exactly the range into the given buffer."""
    data = payload(1_000_000)
    lake.put("ri", data)
    buf = bytearray(600_000)
    for start, length in [(0, 1_000_000), (123, 456_789), (999_000, 1000), (5, 0)]:
        view = memoryview(buf)[:length] if length <= len(buf) else memoryview(bytearray(length))
        view[:] = b"\xff" * length
        read_into(lake, "ri", start, view)
        assert bytes(view) == data[start : start + length]
    for start, length in [(999_995, 10), (1_000_000, 1), (2_000_000, 5)]:
        with pytest.raises(ObjectNotFoundError, match="shorter"):
            read_into(lake, "ri", start, memoryview(bytearray(length)))
    with pytest.raises(ObjectNotFoundError, match="no/such/key"):
        read_into(lake, "no/such/key", 0, memoryview(bytearray(10)))


def test_missing_key(lake: Lake) -> None:
    for call in (
        lambda: lake.get("no/such/key"),
        lambda: lake.get("no/such/key", 5, 10),
        lambda: list(lake.iter_chunks("no/such/key")),
        lambda: list(lake.iter_chunks("no/such/key", 5, 10)),
    ):
        with pytest.raises(ObjectNotFoundError) as info:
            call()
        assert "no/such/key" in str(info.value)
        assert lake.url in str(info.value)


def test_put_file_streams_multipart(lake: Lake, tmp_path: Path) -> None:
    data = payload(12 * MiB + 12345, seed=1)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        reader = BoundedReader(f)
        lake.put_file("big/obj", reader, len(data))  # type: ignore[arg-type]
    assert 0 < reader.largest_read <= 16 * MiB
    if isinstance(lake, S3Lake):
        assert reader.largest_read <= PART
    got = hashlib.sha256()
    for chunk in lake.iter_chunks("big/obj", chunk_size=MiB):
        assert len(chunk) <= MiB
        got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    assert lake.get("big/obj", 5 * MiB - 10, 20) == data[5 * MiB - 10 : 5 * MiB + 10]
    assert [o.size for o in lake.list("big/")] == [len(data)]


def test_put_file_small_and_exact_size(lake: Lake) -> None:
    data = payload(1000)
    lake.put_file("small", io.BytesIO(data + b"extra, not stored"), len(data))
    assert lake.get("small") == data
    lake.put_file("zero", io.BytesIO(b""), 0)
    assert lake.get("zero") == b""


@pytest.mark.parametrize("size", [1000, 12 * MiB])
def test_put_file_source_too_short_leaves_nothing(lake: Lake, size: int) -> None:
    short = payload(size - 100)
    with pytest.raises(LakeError, match="early"):
        lake.put_file("short", io.BytesIO(short), size)
    assert lake.exists(["short"]) == set()
    assert list(lake.list()) == []
    if isinstance(lake, S3Lake):  # the multipart upload was aborted, no parts left behind
        uploads = lake._client.list_multipart_uploads(Bucket=lake.bucket)
        assert not uploads.get("Uploads")


def test_iter_chunks_ranges(lake: Lake) -> None:
    data = payload(1_000_000)
    lake.put("c", data)
    for start, length, chunk_size in [
        (0, None, 65536),
        (123, 456_789, 100_000),
        (999_000, 1000, 7),
    ]:
        chunks = list(lake.iter_chunks("c", start, length, chunk_size=chunk_size))
        assert all(0 < len(c) <= chunk_size for c in chunks)
        end = len(data) if length is None else start + length
        assert b"".join(chunks) == data[start:end]


def test_exists_batch(lake: Lake) -> None:
    present = [f"e/{i:03d}" for i in range(40)]
    for key in present:
        lake.put(key, b"x")
    missing = [f"e/{i:03d}" for i in range(40, 80)] + ["other/e/001"]
    asked = present[::3] + missing + present[:2]  # duplicates are fine
    assert lake.exists(asked) == set(present[::3]) | set(present[:2])
    assert lake.exists([]) == set()
    assert lake.exists(iter(["e/000"])) == {"e/000"}


def test_list_prefix_key_order_and_sizes(lake: Lake) -> None:
    # "d/a/b" sorts after "d/a-" and "d/a.b" ('/' is 0x2f): stores that list
    # folder by folder (SeaweedFS) get this wrong unless the backend sorts.
    sizes = {"d/a/b": 3, "d/a-": 1, "d/a.b": 4, "d/a0": 0, "d/ab": 7, "d/z/y/x": 2, "dz": 5}
    for key, n in sizes.items():
        lake.put(key, b"q" * n)
    listed = list(lake.list("d/"))
    assert [o.key for o in listed] == sorted(k for k in sizes if k.startswith("d/"))
    assert all(isinstance(o, ObjectInfo) and o.size == sizes[o.key] for o in listed)
    assert [o.key for o in lake.list("d/a")] == ["d/a-", "d/a.b", "d/a/b", "d/a0", "d/ab"]
    assert [o.key for o in lake.list()] == sorted(sizes)
    assert list(lake.list("nothing/")) == []


def test_list_paginates(lake: Lake) -> None:
    keys = [f"p/{i:04x}" for i in range(2 * PAGE + 37)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: lake.put(k, k.encode()), keys))
    lake.put("q/outside", b"")
    listed = list(lake.list("p/"))
    assert [o.key for o in listed] == sorted(keys)
    assert all(o.size == 6 for o in listed)
    assert [o.key for o in lake.list("p/01")] == sorted(k for k in keys if k.startswith("p/01"))


def test_delete_batch(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "DELETE_BATCH", 50)  # several delete_objects calls on S3
    keys = [f"x/{i:03d}" for i in range(130)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: lake.put(k, b"1"), keys))
    gone = keys[:120]
    lake.delete(gone + ["x/missing", "never/there"])
    assert [o.key for o in lake.list("x/")] == keys[120:]
    assert lake.exists(keys) == set(keys[120:])
    lake.delete([])
    lake.delete(gone)  # deleting again is fine


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a\x00b", "", "a//b", "a/./b", "a\\b"])
def test_invalid_keys_refused(lake: Lake, key: str) -> None:
    calls = [
        lambda: lake.put(key, b"x"),
        lambda: lake.put_file(key, io.BytesIO(b"x"), 1),
        lambda: lake.get(key),
        lambda: list(lake.iter_chunks(key)),
        lambda: lake.exists(["ok", key]),
        lambda: lake.delete([key]),
    ]
    for call in calls:
        with pytest.raises(InvalidPathError):
            call()


def test_overwrite_is_atomic_and_idempotent(lake: Lake) -> None:
    old, new = b"a" * 300_000, b"b" * 200_000
    lake.put("o", old)
    lake.put("o", old)
    assert lake.get("o") == old
    stop = threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(lake.get("o"))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            lake.put("o", new if i % 2 == 0 else old)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen and all(s in (old, new) for s in seen)
    assert lake.get("o") == old
    assert [o.size for o in lake.list("o")] == [len(old)]


def _interrupted_upload(lake: Lake, key: str) -> None:
    """What a writer killed midway leaves: an open multipart upload, or a temp file."""
    if isinstance(lake, S3Lake):
        upload = lake.create_multipart(key)
        part = _put_part(lake.presign("upload_part", key, 60, UploadId=upload, PartNumber=1))
        assert part == 200
    else:
        assert isinstance(lake, LocalLake)
        folder = lake.root / key.rsplit("/", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".tmp-killed").write_bytes(b"half a pack")


def _put_part(url: str) -> int:
    import urllib.request

    req = urllib.request.Request(url, data=b"x" * PART, method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(r.status)


def test_interrupted_uploads_are_dropped_once_stale(lake: Lake) -> None:
    lake.put("packs/done.pack", b"whole")
    _interrupted_upload(lake, "packs/killed.pack")
    # A young upload may still be running: kept.
    assert lake.abort_stale_uploads(timedelta(hours=1)) == 0
    time.sleep(1.1)  # S3 reports the start of an upload to the second
    assert lake.abort_stale_uploads(timedelta(seconds=1)) == 1
    assert lake.abort_stale_uploads(timedelta(seconds=1)) == 0
    assert [o.key for o in lake.list("packs/")] == ["packs/done.pack"]
    assert lake.get("packs/done.pack") == b"whole"
    if isinstance(lake, LocalLake):
        assert not any(p.name.startswith(".tmp-") for p in lake.root.rglob("*"))


def test_concurrent_puts(lake: Lake) -> None:
    keys = {f"cc/{i // 8}/{i}": payload(5000 + i, seed=i) for i in range(96)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: lake.put(*kv), keys.items()))
    assert lake.exists(keys) == set(keys)
    with ThreadPoolExecutor(16) as pool:
        got = dict(zip(keys, pool.map(lake.get, keys), strict=True))
    assert got == keys


# -- S3 only -------------------------------------------------------------------


@pytest.mark.s3
def test_s3_lake_down_then_back(seaweed: SeaweedServer, s3_bucket: str) -> None:
    lake = make_s3_lake(seaweed, s3_bucket, retries=2, timeout=2.0)
    lake.put("k", b"before")
    seaweed.stop()
    try:
        for call in (
            lambda: lake.get("k"),
            lambda: lake.put("k2", b"x"),
            lambda: lake.exists(["k", "k2"]),
            lambda: list(lake.list()),
            lambda: lake.delete(["k"]),
        ):
            started = time.monotonic()
            with pytest.raises(LakeUnreachableError) as info:
                call()
            # Not a speed check: retries must give up instead of hanging.
            assert time.monotonic() - started < 60
            message = str(info.value)
            assert seaweed.endpoint in message
            assert "after 2 attempts" in message
            assert seaweed.secret_key not in message
            assert seaweed.access_key not in message
    finally:
        seaweed.start()
    assert lake.get("k") == b"before"  # stale pooled connections are retried transparently
    lake.put("k2", b"after")
    assert lake.exists(["k", "k2"]) == {"k", "k2"}
    lake.close()


@pytest.mark.s3
@pytest.mark.parametrize("setting", ["s3_endpoint", "s3_public_endpoint"])
def test_s3_a_malformed_endpoint_names_the_setting_not_its_value(setting: str) -> None:
    arg = setting.removeprefix("s3_")
    with pytest.raises(UserError) as caught:
        S3Lake("bucket", access_key="key", secret_key="secret", **{arg: "key:secret@host"})
    assert caught.value.message == f"{setting} is not a URL"
    assert "secret" not in caught.value.hint


def test_s3_credentials_never_shown(seaweed: SeaweedServer, s3_bucket: str) -> None:
    lake = make_s3_lake(seaweed, s3_bucket)
    secret, access = seaweed.secret_key, seaweed.access_key
    for text in (repr(lake), lake.url, lake.endpoint, str(vars(lake).get("url"))):
        assert secret not in text and access not in text
    assert lake.url == f"s3://{s3_bucket}/pfx"
    with pytest.raises(ObjectNotFoundError) as missing:
        lake.get("nope")
    wrong = S3Lake(
        s3_bucket,
        endpoint=seaweed.endpoint,
        access_key=access,
        secret_key=secret[::-1],
        retries=1,
    )
    with pytest.raises(LakeError) as denied:
        wrong.get("nope")
    assert not isinstance(denied.value, ObjectNotFoundError)
    for exc in (missing.value, denied.value):
        assert secret not in str(exc) and secret[::-1] not in str(exc)
        assert secret not in exc.hint
    lake.close()
    wrong.close()


@pytest.mark.s3
def test_s3_from_settings(s3_settings: Settings) -> None:
    lake = open_lake(s3_settings)
    assert isinstance(lake, S3Lake)
    assert lake.url == s3_settings.lake_url
    assert lake.part_size == s3_settings.part_size
    lake.put("hello", b"world")
    assert lake.get("hello") == b"world"
    # Keys live under the URL's prefix.
    bare = S3Lake.from_settings(s3_settings.with_(lake_url=s3_settings.lake_url[: -len("/pfx")]))
    assert [o.key for o in bare.list()] == ["pfx/hello"]
    for url in ("s3://", "s3:///pfx"):
        with pytest.raises(UserError):
            S3Lake.from_settings(s3_settings.with_(lake_url=url))


@pytest.fixture(params=["signed", "botocore"])
def get_path(request: pytest.FixtureRequest, s3_lake: S3Lake) -> str:
    """Each S3 read test runs on both GET paths: plain signed connections and botocore."""
    if request.param == "botocore":
        assert s3_lake._gets is not None
        s3_lake._gets.close()
        s3_lake._gets = None
    return str(request.param)


def _flaky_gets(
    s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch, path: str, wrap: Callable[[Any, int], Any]
) -> list[str | None]:
    """Record every GET's Range; ``wrap(raw, n)`` may replace the n-th GET's http response."""
    ranges: list[str | None] = []
    if path == "signed":
        gets = s3_lake._gets
        assert gets is not None
        real_open = gets.open

        def flaky_open(key: str, start: int, length: int | None) -> tuple[Any, int]:
            end = "" if length is None else str(start + length - 1)
            ranges.append(f"bytes={start}-{end}")
            body, size = real_open(key, start, length)
            body._response = wrap(body._response, len(ranges))
            return body, size

        monkeypatch.setattr(gets, "open", flaky_open)
        return ranges
    real_get = s3_lake._client.get_object

    def flaky_get(**kwargs: Any) -> dict[str, Any]:
        ranges.append(kwargs.get("Range"))
        response = real_get(**kwargs)
        raw = response["Body"]._raw_stream
        raw._fp = wrap(raw._fp, len(ranges))
        return response  # type: ignore[no-any-return]

    monkeypatch.setattr(s3_lake._client, "get_object", flaky_get)
    return ranges


class _BreakingResponse:
    """An http.client response whose connection resets after its first ``good`` reads."""

    def __init__(self, fp: Any, good: int, size: int = 50_000) -> None:
        self.fp, self.good, self.size = fp, good, size

    def _spend(self) -> None:
        if self.good == 0:
            raise ConnectionResetError(104, "Connection reset by peer")
        self.good -= 1

    def readinto(self, view: memoryview) -> int:
        self._spend()
        return int(self.fp.readinto(view[: self.size]))

    def read(self, n: int) -> bytes:
        self._spend()
        return bytes(self.fp.read(n))

    def isclosed(self) -> bool:
        return bool(self.fp.isclosed())

    def close(self) -> None:
        self.fp.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


@pytest.mark.s3
def test_s3_read_resumes_after_broken_stream(
    s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch, get_path: str
) -> None:
    data = payload(300_000)
    s3_lake.put("b", data)
    ranges = _flaky_gets(
        s3_lake,
        monkeypatch,
        get_path,
        lambda raw, n: _BreakingResponse(raw, good=1, size=100_000) if n == 1 else raw,
    )
    assert (
        b"".join(s3_lake.iter_chunks("b", 1000, 250_000, chunk_size=100_000))
        == (data[1000:251_000])
    )
    assert ranges == ["bytes=1000-250999", "bytes=101000-250999"]


@pytest.mark.s3
@pytest.mark.parametrize("breaks", [1, 5])
def test_s3_get_into_resumes_after_broken_stream(
    s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch, breaks: int, get_path: str
) -> None:
    """A body read straight into the buffer resumes at the last byte; retries are bounded."""
    data = payload(300_000)
    s3_lake.put("b", data)
    good = 1 if breaks == 1 else 0
    ranges = _flaky_gets(
        s3_lake,
        monkeypatch,
        get_path,
        lambda raw, n: _BreakingResponse(raw, good=good) if n <= breaks else raw,
    )
    buf = memoryview(bytearray(250_000))
    if breaks >= s3_lake.retries:
        with pytest.raises(LakeUnreachableError, match="get b"):
            s3_lake.get_into("b", 1000, buf)
        assert len(ranges) == s3_lake.retries
        return
    s3_lake.get_into("b", 1000, buf)
    assert bytes(buf) == data[1000:251_000]
    assert ranges == ["bytes=1000-250999", "bytes=51000-250999"]


@pytest.mark.s3
def test_s3_get_into_keeps_its_connection(s3_lake: S3Lake, get_path: str) -> None:
    """A body read to its end gives its connection back: many ranges, one connection."""
    data = payload(200_000)
    s3_lake.put("k", data)
    buf = memoryview(bytearray(100_000))
    for i in range(20):
        s3_lake.get_into("k", i * 1000, buf)
        assert bytes(buf) == data[i * 1000 : i * 1000 + 100_000]
    if get_path == "signed":
        assert s3_lake._gets is not None
        assert len(s3_lake._gets._all) == 1
        return
    pools = s3_lake._client._endpoint.http_session._manager.pools
    assert [pools[k].num_connections for k in pools.keys()] == [1]  # noqa: SIM118


@pytest.mark.s3
def test_s3_signed_gets_leave_botocore_out(
    s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads go on the signed connections; a body left half-read drops its connection."""
    data = payload(300_000)
    s3_lake.put("k", data)

    def no(**kwargs: Any) -> None:
        raise AssertionError("a GET went through botocore")

    monkeypatch.setattr(s3_lake._client, "get_object", no)
    assert s3_lake.get("k", 5, 10) == data[5:15]
    assert b"".join(s3_lake.iter_chunks("k", 100)) == data[100:]
    buf = memoryview(bytearray(1000))
    s3_lake.get_into("k", 299_000, buf)
    assert bytes(buf) == data[299_000:]
    gets = s3_lake._gets
    assert gets is not None and len(gets._all) == 1
    chunks = s3_lake.iter_chunks("k", 0, None, chunk_size=1000)
    assert next(chunks) == data[:1000]
    chunks.close()  # the rest of its body is never read: its connection cannot serve again
    assert len(gets._all) == 0
    assert s3_lake.get("k", 0, 3) == data[:3]  # a new one is opened
    assert len(gets._all) == 1
    # A body closed early by another thread drops the connection it came on, not that
    # thread's: the opening thread's next GET gets a fresh connection.
    chunks = s3_lake.iter_chunks("k", 0, None, chunk_size=1000)
    assert next(chunks) == data[:1000]
    closer = threading.Thread(target=chunks.close)
    closer.start()
    closer.join()
    assert len(gets._all) == 0
    assert s3_lake.get("k", 7, 3) == data[7:10]
    assert len(gets._all) == 1
    with pytest.raises(ObjectNotFoundError, match="missing"):
        s3_lake.get("missing")
    with pytest.raises(ObjectNotFoundError, match="shorter"):
        s3_lake.get("k", 400_000, 10)


@pytest.mark.s3
def test_s3_signed_gets_retry_a_stale_connection_and_throttling(
    s3_lake: S3Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection the server closed is reopened; 503 SlowDown is retried, then reported."""
    s3_lake.put("k", b"hello")
    gets = s3_lake._gets
    assert gets is not None
    assert s3_lake.get("k") == b"hello"
    conn = gets._local.conn
    assert conn.sock is not None
    conn.sock.shutdown(socket.SHUT_RDWR)  # as a server's idle timeout would close it
    assert s3_lake.get("k") == b"hello"
    real = http.client.HTTPConnection.getresponse
    answers: list[int] = []

    def throttled(self: http.client.HTTPConnection) -> http.client.HTTPResponse:
        response = real(self)
        answers.append(response.status)
        if len(answers) <= throttles:
            response.read()
            response.status = 503
            response.fp = io.BufferedReader(io.BytesIO(b"<Error><Code>SlowDown</Code></Error>"))  # type: ignore[assignment]
            response.length = None
        return response

    monkeypatch.setattr(http.client.HTTPConnection, "getresponse", throttled)
    throttles = 2
    assert s3_lake.get("k") == b"hello"
    assert len(answers) == 3
    answers.clear()
    throttles = 99
    with pytest.raises(LakeError, match="SlowDown"):
        s3_lake.get("k")
    assert len(answers) == s3_lake.retries


@pytest.mark.s3
def test_s3_reads_load_no_botocore_until_another_call(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    """With endpoint, keys and region given, GETs need no botocore; a PUT loads it then."""
    code = (
        "import sys; from lakecache.lake.s3 import S3Lake;"
        f"lake = S3Lake({s3_bucket!r}, 'pfx', endpoint={seaweed.endpoint!r}, region='us-east-1',"
        f" access_key={seaweed.access_key!r}, secret_key={seaweed.secret_key!r});"
        "assert lake.get('k') == b'value', 'wrong bytes';"
        "assert 'botocore.session' not in sys.modules, 'botocore loaded for a GET';"
        "lake.put('k2', b'v2');"
        "assert 'botocore.session' in sys.modules;"
        "assert lake.get('k2') == b'v2'"
    )
    lake = make_s3_lake(seaweed, s3_bucket)
    lake.put("k", b"value")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HOME": str(tmp_path)}
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    with pytest.raises(UserError, match="s3_public_endpoint is not a URL"):
        S3Lake(
            s3_bucket,
            endpoint=seaweed.endpoint,
            public_endpoint="key:secret@host",
            region="us-east-1",
            access_key="a",
            secret_key="b",
        )
    lake.close()


@pytest.mark.s3
def test_a_commit_makes_the_write_client_while_it_scans(
    s3_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the lake for a commit makes botocore's client in the background too."""
    from lakecache.data.hub import Hub

    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    hub = Hub(s3_settings.with_(s3_region="us-east-1"))
    hub.open_lake_in_background()
    lake = hub.lake
    assert isinstance(lake, S3Lake)
    assert lake._boto is None  # reads need no botocore
    hub.open_lake_in_background(writes=True)
    deadline = time.monotonic() + 60
    while lake._boto is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lake._boto is not None
    hub.close()


def test_boto3_loads_only_for_s3(tmp_path: Path) -> None:
    code = (
        "import sys; from lakecache.lake import open_lake; from lakecache.settings import Settings;"
        f"lake = open_lake(Settings(home={str(tmp_path)!r}, author='t'));"
        "lake.put('k', b'v');"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
