"""What the lake endpoints refuse: keys outside the dataset, writes by readers, lies about uploads,
tampered URLs; and what a client sees when the server goes away."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import urllib3
from helpers import make_files
from server.live import build_world

from client.world import LakeWorld, MiB
from lakecache.client import ServerUnreachableError
from lakecache.data.dataset import Dataset
from lakecache.data.progress import NullProgress
from lakecache.errors import NotFoundError
from lakecache.lake.objects import (
    Commit,
    blob_key,
    commit_key,
    encode_manifest,
    encode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)
from lakecache.settings import Settings

LAKE = "/api/v1/lake"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _xray_pack(lw: LakeWorld) -> str:
    hub = lw.world.plane.hub
    entry = Dataset("xray", hub=hub).files("v1", ["many"])[0]
    loc = hub.catalog.locate_blobs([entry.digest])[entry.digest]
    assert loc.pack_id is not None
    return pack_key(loc.pack_id)


def _presign(
    lw: LakeWorld,
    who: str,
    *items: tuple[str, str],
    datasets: tuple[str, ...] = ("xray",),
    size: int | None = None,
) -> tuple[int, dict]:  # type: ignore[type-arg]
    body = {
        "datasets": list(datasets),
        "items": [
            {"method": m, "key": k, **({"size": size} if m == "PUT" else {})} for m, k in items
        ],
    }
    r = lw.call(who, "POST", f"{LAKE}/presign", json=body)
    return r.status_code, r.json()


def test_a_reader_gets_urls_only_for_the_datasets_objects(lake_world: LakeWorld) -> None:
    xray_pack = _xray_pack(lake_world)
    v1 = lake_world.world.plane.hub.catalog.get_commit("xray", lake_world.world.commits["v1"])
    ok, body = _presign(
        lake_world,
        "rita",
        ("GET", xray_pack),
        ("GET", manifest_key(v1.manifest)),
        ("GET", commit_key(v1.id)),
    )
    assert ok == 200 and all(i["status"] == "ok" and i["url"] for i in body["items"])
    # another dataset's pack, a made-up pack, a pack index: refused, whatever else is asked
    for key in (lake_world.other_pack, pack_key("ab" * 32), pack_index_key(xray_pack[6:-5])):
        status, err = _presign(lake_world, "rita", ("GET", xray_pack), ("GET", key))
        assert status == 403 and err["error"]["code"] == "forbidden", key
    # olga may read "other": naming it does not widen rita's scope
    status, _ = _presign(lake_world, "rita", ("GET", lake_world.other_pack), datasets=("other",))
    assert status == 404
    status, _ = _presign(lake_world, "olga", ("GET", lake_world.other_pack), datasets=("other",))
    assert status == 200
    # not a key clients use at all
    for key in ("../secrets", "packs/x.pack", "blobs/zz/" + "0" * 62, "config.toml"):
        status, err = _presign(lake_world, "rita", ("GET", key))
        assert status == 400 and err["error"]["code"] == "invalid_path", key


def test_only_writers_get_put_urls_and_never_for_existing_keys(lake_world: LakeWorld) -> None:
    new = blob_key(hash_bytes(os.urandom(32)))
    status, err = _presign(lake_world, "rita", ("PUT", new), size=32)
    assert status == 403 and "writer" in err["error"]["message"]
    status, _ = _presign(lake_world, "nora", ("PUT", new), size=32)
    assert status == 404
    status, body = _presign(
        lake_world, "wendy", ("PUT", new), ("PUT", _xray_pack(lake_world)), size=32
    )
    assert status == 200
    fresh, existing = body["items"]
    assert fresh["status"] == "ok" and fresh["url"]
    assert existing["status"] == "exists" and existing["url"] is None
    status, _ = _presign(lake_world, "wendy", ("PUT", "other/place"), size=32)
    assert status == 400


def test_a_non_member_gets_404_from_every_lake_endpoint(lake_world: LakeWorld) -> None:
    d = ["xray"]
    digest = "0" * 64
    for method, path, kw in (
        ("POST", "/known", {"json": {"datasets": d, "digests": [digest]}}),
        ("POST", "/locate", {"json": {"datasets": d, "digests": [digest]}}),
        ("POST", "/exists", {"json": {"datasets": d, "keys": [blob_key(digest)]}}),
        (
            "POST",
            "/packs",
            {"json": {"datasets": d, "pack_id": digest, "size": 1, "blob_count": 1}},
        ),
        ("GET", f"/commits/{lake_world.world.commits['v1']}?dataset=xray", {}),
        ("GET", "/log?dataset=xray", {}),
        ("GET", f"/objects/{_xray_pack(lake_world)}?dataset=xray", {}),
    ):
        r = lake_world.call("nora", method, LAKE + path, **kw)
        assert r.status_code == 404, path
        assert r.json()["error"]["message"] == "no dataset named 'xray'"


@pytest.mark.s3
def test_seaweedfs_refuses_a_tampered_url(lake_world: LakeWorld) -> None:
    if lake_world.mode != "s3":
        pytest.skip("only an S3 lake has presigned URLs")
    http = urllib3.PoolManager()
    status, body = _presign(lake_world, "rita", ("GET", _xray_pack(lake_world)))
    url = body["items"][0]["url"]
    assert http.request("GET", url, headers={"Range": "bytes=0-9"}).status == 206
    other = lake_world.other_pack.split("/", 1)[1]
    tampered = url.replace(_xray_pack(lake_world).split("/", 1)[1], other)
    assert tampered != url
    r = http.request("GET", tampered)
    assert r.status == 403 and b"SignatureDoesNotMatch" in r.data
    head, sig = url.rsplit("X-Amz-Signature=", 1)
    forged = head + "X-Amz-Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert http.request("GET", forged).status == 403
    longer = url.replace("X-Amz-Expires=900", "X-Amz-Expires=604800")
    assert http.request("GET", longer).status == 403
    # A PUT URL takes exactly the size it was signed for.
    data = os.urandom(100)
    key = blob_key(hash_bytes(data))
    _, body = _presign(lake_world, "wendy", ("PUT", key), size=len(data))
    put = body["items"][0]["url"]
    headers = body["items"][0]["headers"]
    assert headers == {"If-None-Match": "*"}
    assert http.request("PUT", put, body=data + b"more", headers=headers).status == 403
    # ... and only with If-None-Match (signed), so it can never replace an object.
    assert http.request("PUT", put, body=data).status == 403
    assert http.request("PUT", put, body=data, headers=headers).status == 200
    assert http.request("PUT", put, body=data, headers=headers).status == 412


def test_the_server_records_only_what_the_lake_holds(lake_world: LakeWorld) -> None:
    lake = lake_world.world.plane.hub.lake
    d = ["xray"]
    blobs = [os.urandom(10), os.urandom(20)]
    index = encode_pack_index([(hash_bytes(blobs[0]), 0, 10), (hash_bytes(blobs[1]), 10, 20)])
    pid = hash_bytes(index)

    def record(size: int = 30, count: int = 2) -> tuple[int, str]:
        r = lake_world.call(
            "wendy",
            "POST",
            f"{LAKE}/packs",
            json={"datasets": d, "pack_id": pid, "size": size, "blob_count": count},
        )
        return r.status_code, r.text

    status, text = record()
    assert status == 400 and "not in the lake" in text  # nothing uploaded yet
    lake.put(pack_key(pid), b"".join(blobs))
    status, text = record()
    assert status == 400 and "index" in text  # the index is missing
    lake.put(pack_index_key(pid), index)
    assert record(size=31)[0] == 400  # wrong size
    assert record(count=3)[0] == 400  # wrong blob count
    assert record() == (200, record()[1])  # idempotent
    catalog = lake_world.world.plane.hub.catalog
    assert catalog.known_blobs([hash_bytes(b) for b in blobs]) == {hash_bytes(b) for b in blobs}

    big = blob_key("cd" * 32)
    r = lake_world.call(
        "wendy", "POST", f"{LAKE}/blobs", json={"datasets": d, "digest": "cd" * 32, "size": 5}
    )
    assert r.status_code == 400 and big in r.text

    # A commit whose objects are not in the lake, or whose manifest names unknown blobs.
    entries = [("a.bin", "ef" * 32, 7)]
    from lakecache.lake.objects import ManifestEntry

    manifest = encode_manifest([ManifestEntry(p, dg, n) for p, dg, n in entries])
    head = lake_world.world.plane.hub.catalog.head("xray")
    assert head is not None
    commit = Commit("xray", hash_bytes(manifest), (head,), "wendy", "m", _now(), 1, 7)

    def add() -> tuple[int, str]:
        r = lake_world.call(
            "wendy",
            "POST",
            f"{LAKE}/commits",
            json={"commit": commit.to_json().decode(), "expected_head": head},
        )
        return r.status_code, r.text

    assert add()[0] == 400  # no commit object
    lake.put(commit_key(commit.id), commit.to_json())
    status, text = add()
    assert status == 400 and "manifest" in text  # no manifest object
    lake.put(manifest_key(commit.manifest), manifest)
    status, text = add()
    assert status == 400 and "did not upload" in text  # names a blob nobody uploaded
    assert lake_world.world.plane.hub.catalog.head("xray") == head
    # A commit object sent in another form than the one stored is refused too.
    r = lake_world.call(
        "wendy", "POST", f"{LAKE}/commits", json={"commit": commit.to_json().decode() + " "}
    )
    assert r.status_code == 400


def test_a_commit_by_anyone_but_the_caller_is_refused(lake_world: LakeWorld) -> None:
    plane = lake_world.world.plane
    catalog = plane.hub.catalog
    plane.accounts.create_owned_dataset("authors", "wendy", now=plane.clock.now())
    head = catalog.head("xray")
    assert head is not None
    top = catalog.get_commit("xray", head)

    def add(who: str, author: str) -> tuple[Commit, httpx.Response]:
        """A commit of "authors" that is right in every way but perhaps its author."""
        c = Commit("authors", top.manifest, (), author, "m", _now(), top.file_count, top.bytes)
        plane.hub.lake.put(commit_key(c.id), c.to_json())
        body = {"commit": c.to_json().decode(), "expected_head": None}
        return c, lake_world.call(who, "POST", f"{LAKE}/commits", json=body)

    # Org admins too: a commit names the one who made it, whoever that is.
    for who, author in (("wendy", "alice"), ("wendy", "wendy@laptop"), ("admin", "wendy")):
        forged, r = add(who, author)
        assert r.status_code == 403, (who, author)
        error = r.json()["error"]
        assert error["code"] == "forbidden"
        assert f"names {author!r} as its author" in error["message"]
        assert f"logged in as {who!r}" in error["message"] and repr(who) in error["hint"]
        with pytest.raises(NotFoundError):
            catalog.get_commit("authors", forged.id)
    assert catalog.head("authors") is None
    mine, r = add("wendy", "wendy")
    assert r.status_code == 201 and r.json()["author"] == "wendy"
    assert catalog.head("authors") == mine.id


def test_a_streamed_upload_must_match_its_key(lake_world: LakeWorld) -> None:
    if lake_world.mode != "local":
        pytest.skip("only a folder lake takes uploads through the server")
    data = os.urandom(1000)
    right = blob_key(hash_bytes(data))
    wrong = blob_key(hash_bytes(b"something else"))
    url = f"{LAKE}/objects/{wrong}?dataset=xray"
    r = lake_world.call("wendy", "PUT", url, content=data)
    assert r.status_code == 400 and "hash" in r.text
    assert not lake_world.world.plane.hub.lake.exists([wrong])
    r = lake_world.call("wendy", "PUT", f"{LAKE}/objects/{right}?dataset=xray", content=data)
    assert r.status_code == 200 and r.json()["status"] == "stored"
    r = lake_world.call("wendy", "PUT", f"{LAKE}/objects/{right}?dataset=xray", content=data)
    assert r.json()["status"] == "exists"
    # readers may not write; the new blob is in no commit yet, so not even its writer reads it
    assert lake_world.call("rita", "PUT", url, content=data).status_code == 403
    assert (
        lake_world.call("wendy", "GET", f"{LAKE}/objects/{right}?dataset=xray").status_code == 403
    )
    ranged = lake_world.call(
        "rita",
        "GET",
        f"{LAKE}/objects/{_xray_pack(lake_world)}?dataset=xray",
        headers={"Range": "bytes=2-5"},
    )
    assert ranged.status_code == 206 and len(ranged.content) == 4


@pytest.mark.s3
def test_a_multipart_upload_outliving_its_urls_gets_new_ones(lake_world: LakeWorld) -> None:
    if lake_world.mode != "s3":
        pytest.skip("only an S3 lake uploads in parts")
    data = os.urandom(6 * MiB)
    key = blob_key(hash_bytes(data))
    d = ["xray"]
    r = lake_world.call(
        "wendy", "POST", f"{LAKE}/multipart", json={"datasets": d, "key": key, "size": len(data)}
    )
    started = r.json()
    assert r.status_code == 200 and [p["size"] for p in started["parts"]] == [5 * MiB, 1 * MiB]
    again = lake_world.call(
        "wendy",
        "POST",
        f"{LAKE}/multipart/parts",
        json={
            "datasets": d,
            "key": key,
            "upload_id": started["upload_id"],
            "size": len(data),
            "part_size": started["part_size"],
            "numbers": [1, 2],
        },
    ).json()["parts"]
    http = urllib3.PoolManager()
    etags = []
    for part, start in zip(again, (0, 5 * MiB), strict=True):
        resp = http.request("PUT", part["url"], body=data[start : start + part["size"]])
        assert resp.status == 200
        etags.append({"number": part["number"], "etag": resp.headers["ETag"]})
    done = lake_world.call(
        "wendy",
        "POST",
        f"{LAKE}/multipart/complete",
        json={"datasets": d, "key": key, "upload_id": started["upload_id"], "parts": etags},
    )
    assert done.status_code == 200 and done.json()["size"] == len(data)
    assert lake_world.world.plane.hub.lake.get(key) == data


class _StopServerAt(NullProgress):
    """Stops the server once the commit has read ``after`` files."""

    def __init__(self, stop: threading.Event, after: int) -> None:
        self.stop, self.after, self.seen = stop, after, 0

    def advance(self, files: int, nbytes: int) -> None:
        self.seen += files
        if self.seen >= self.after:
            self.stop.set()


@pytest.mark.parametrize("mode", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_server_that_goes_away_midway_is_named(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base = tmp_path / "w"
    settings = Settings(home=base / "home", workers=4, author="tester")
    if mode == "s3":
        from fixtures.seaweed import new_bucket

        seaweed = request.getfixturevalue("seaweed")
        settings = settings.with_(
            lake_url=f"s3://{new_bucket(seaweed)}/lake",
            s3_endpoint=seaweed.endpoint,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
        )
    world = build_world(base / "home", base / "src", settings=settings)
    stop = threading.Event()
    stopper = threading.Thread(target=lambda: (stop.wait(60), world.server.stop()), daemon=True)
    stopper.start()
    client = Settings(
        home=tmp_path / "client",
        server_url=world.url,
        token=world.tokens["wendy"],
        workers=2,
        pack_target=4 * MiB,
    )
    ds = Dataset("xray", settings=client)
    try:
        src = make_files(tmp_path / "src", n=400, size=50_000)
        with pytest.raises(ServerUnreachableError) as caught:
            ds.commit(src, "interrupted", progress=_StopServerAt(stop, 150))
        assert world.url in caught.value.message and "lakecache server" in caught.value.message
        assert "lakecache server" in caught.value.hint
        with pytest.raises(ServerUnreachableError, match=world.url):
            ds.log()
    finally:
        stop.set()
        stopper.join(timeout=60)
        ds.hub.close()
        world.plane.close()


def test_a_record_the_server_refuses_stops_the_commit_before_it_is_added(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    from lakecache.client import RemoteCatalog
    from lakecache.errors import UserError
    from lakecache.lake.objects import BlobLocation

    hub = lake_world.hub("wendy", tmp_path / "client")
    try:
        catalog = hub.catalog
        assert isinstance(catalog, RemoteCatalog)
        catalog.get_dataset("xray")
        pid = hash_bytes(b"never uploaded")
        # Records go in the background: the call returns; the refusal comes at the flush
        # that every add_commit starts with.
        catalog.record_pack(pid, 10, [BlobLocation("ab" * 32, 10, pid, 0)])
        with pytest.raises(UserError, match="not in the lake"):
            catalog.flush()
        catalog.flush()  # reported once
    finally:
        hub.close()


def test_a_pack_shared_by_deduplication_shows_a_reader_only_her_datasets_bytes(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """``mix`` holds one file identical to one of ``other``'s (olga's, hidden from wendy):
    wendy uploads it, yet the blob index keeps its first location, other's pack. Wendy
    reads that blob there, and nothing else."""
    plane = lake_world.world.plane
    other = Dataset("other", hub=plane.hub)
    mine, *theirs = other.files()
    other.pull("latest", tmp_path / "other")
    src = tmp_path / "mix-src"
    (src / "sub").mkdir(parents=True)
    (src / "shared.bin").write_bytes((tmp_path / "other" / mine.path).read_bytes())
    (src / "sub" / "own.txt").write_bytes(os.urandom(5000))
    hub = lake_world.hub("wendy", tmp_path / "client")
    name = f"mix{os.urandom(3).hex()}"
    try:
        ds = Dataset.create(name, hub=hub)
        ds.commit(src, "one file is also in another dataset")
        # Both uploaded: the shared file is in a dataset wendy cannot read, so the server
        # does not tell her it is stored (knowing a digest grants nothing).
        assert ds.last_commit_stats is not None and ds.last_commit_stats.uploaded_blobs == 2
        pulled = ds.pull("latest", tmp_path / "pulled")
        assert pulled.files == 2
        assert (tmp_path / "pulled" / "shared.bin").read_bytes() == (
            src / "shared.bin"
        ).read_bytes()
    finally:
        hub.close()

    loc = plane.hub.catalog.locate_blobs([mine.digest])[mine.digest]
    assert loc.pack_id is not None
    key = pack_key(loc.pack_id)
    real = plane.hub.lake.get(key)
    # No URL to the whole pack: the server's own, which serves only her bytes.
    status, body = _presign(lake_world, "wendy", ("GET", key), datasets=(name,))
    assert status == 200 and body["items"][0]["bearer"] is True
    # Olga, whose dataset wrote the pack, reads it whole (on S3, straight from the lake).
    status, body = _presign(lake_world, "olga", ("GET", key), datasets=("other",))
    assert status == 200 and body["items"][0]["bearer"] is (lake_world.mode == "local")

    url = f"{LAKE}/objects/{key}?dataset={name}"
    got = lake_world.call("wendy", "GET", url).content
    assert len(got) == len(real)
    blob = slice(loc.offset, loc.offset + loc.size)
    assert got[blob] == real[blob]
    assert got[: loc.offset] + got[blob.stop :] == bytes(len(real) - loc.size)  # all zeros
    assert any(real[: loc.offset] + real[blob.stop :])  # where olga's other files are
    # A range that spans her blob and a neighbour: the neighbour's bytes are zeros too.
    start, end = max(loc.offset - 100, 0), min(blob.stop + 100, len(real))
    part = lake_world.call("wendy", "GET", url, headers={"Range": f"bytes={start}-{end - 1}"})
    assert part.status_code == 206 and len(part.content) == end - start
    assert part.content == bytes(loc.offset - start) + real[blob] + bytes(end - blob.stop)
    # A reader of xray alone gets nothing of it.
    assert lake_world.call("rita", "GET", f"{LAKE}/objects/{key}?dataset=xray").status_code == 403
    assert theirs  # other has more files than the shared one
