"""The lake trusts no client: attacks by a writer who holds a token and presigned URLs.

Each test runs on a folder lake (bytes through the server) and on a real S3
lake (SeaweedFS; bytes go straight to the lake with presigned URLs).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3

from client.world import LakeWorld, MiB
from lakecache.data.dataset import Dataset
from lakecache.lake.objects import (
    Commit,
    ManifestEntry,
    blob_key,
    commit_key,
    encode_manifest,
    encode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)

LAKE = "/api/v1/lake"
_http = urllib3.PoolManager()


def _now(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat(timespec="microseconds")


def _upload(lw: LakeWorld, who: str, key: str, data: bytes) -> int:
    """Put ``data`` at ``key`` the way a client may: a presigned URL on S3, the server's
    PUT on a folder lake. Returns the HTTP status of the upload itself."""
    if lw.mode == "local":
        return lw.call(who, "PUT", f"{LAKE}/objects/{key}?dataset=xray", content=data).status_code
    body = {"datasets": ["xray"], "items": [{"method": "PUT", "key": key, "size": len(data)}]}
    item = lw.call(who, "POST", f"{LAKE}/presign", json=body).json()["items"][0]
    if item["status"] != "ok":
        return 409
    return int(_http.request("PUT", item["url"], body=data, headers=item["headers"]).status)


def _post(lw: LakeWorld, who: str, path: str, body: dict[str, Any]) -> Any:
    return lw.call(who, "POST", f"{LAKE}{path}", json={"datasets": ["xray"], **body})


def _pack(blobs: list[bytes]) -> tuple[str, bytes, bytes]:
    entries, offset = [], 0
    for b in blobs:
        entries.append((hash_bytes(b), offset, len(b)))
        offset += len(b)
    index = encode_pack_index(entries)
    return hash_bytes(index), b"".join(blobs), index


def test_a_pack_index_over_garbage_is_refused_and_never_known(lake_world: LakeWorld) -> None:
    """Fails on the old code on S3: it checked the pack's size only, and recorded the blob."""
    lake = lake_world.world.plane.hub.lake
    real = os.urandom(3000)
    digest = hash_bytes(real)
    pack_id, _, index = _pack([real])
    garbage = os.urandom(3000)
    assert _upload(lake_world, "wendy", pack_key(pack_id), garbage) == 200
    assert _upload(lake_world, "wendy", pack_index_key(pack_id), index) == 200
    r = _post(lake_world, "wendy", "/packs", {"pack_id": pack_id, "size": 3000, "blob_count": 1})
    assert r.status_code == 400 and "does not hash" in r.json()["error"]["message"]
    assert "removed" in r.json()["error"]["message"]
    assert not lake.exists([pack_key(pack_id)])  # garbage gone: the right bytes may come
    for who in ("wendy", "alice"):
        known = _post(lake_world, who, "/known", {"digests": [digest]}).json()["known"]
        assert known == [], who
    assert lake_world.world.plane.hub.catalog.known_blobs([digest]) == set()

    # The right bytes, in the same pack, are then recorded, and that location is the one kept.
    assert _upload(lake_world, "wendy", pack_key(pack_id), real) == 200
    r = _post(lake_world, "wendy", "/packs", {"pack_id": pack_id, "size": 3000, "blob_count": 1})
    assert r.status_code == 200
    assert _post(lake_world, "alice", "/known", {"digests": [digest]}).json()["known"] == [digest]
    assert lake.get(pack_key(pack_id)) == real


def test_a_large_blob_that_lies_is_refused_and_removed(lake_world: LakeWorld) -> None:
    """Fails on the old code: it recorded a large blob on its size alone."""
    lake = lake_world.world.plane.hub.lake
    real = os.urandom(5000)
    key = blob_key(hash_bytes(real))
    if lake_world.mode == "local":
        lake.put(key, os.urandom(5000))  # a folder lake's server hashes its own uploads
    else:
        assert _upload(lake_world, "wendy", key, os.urandom(5000)) == 200
    r = _post(lake_world, "wendy", "/blobs", {"digest": hash_bytes(real), "size": 5000})
    assert r.status_code == 400 and "do not hash" in r.json()["error"]["message"]
    assert not lake.exists([key])
    known = _post(lake_world, "alice", "/known", {"digests": [hash_bytes(real)]}).json()
    assert known["known"] == []


def test_a_recorded_object_cannot_be_replaced(lake_world: LakeWorld) -> None:
    """Fails on the old code on S3: its PUT URLs replaced whatever was at the key."""
    lake = lake_world.world.plane.hub.lake
    data = os.urandom(4000)
    key = blob_key(hash_bytes(data))
    body = {"datasets": ["xray"], "items": [{"method": "PUT", "key": key, "size": len(data)}]}
    if lake_world.mode == "s3":
        item = lake_world.call("wendy", "POST", f"{LAKE}/presign", json=body).json()["items"][0]
        assert _http.request("PUT", item["url"], body=data, headers=item["headers"]).status == 200
    else:
        assert _upload(lake_world, "wendy", key, data) == 200
    r = _post(lake_world, "wendy", "/blobs", {"digest": hash_bytes(data), "size": len(data)})
    assert r.status_code == 200
    other = os.urandom(len(data))
    if lake_world.mode == "s3":
        # The same URL, still valid, with other bytes: S3 refuses (If-None-Match is signed).
        assert _http.request("PUT", item["url"], body=other, headers=item["headers"]).status == 412
        assert _http.request("PUT", item["url"], body=other).status == 403
    else:
        r = lake_world.call("wendy", "PUT", f"{LAKE}/objects/{key}?dataset=xray", content=other)
        assert r.status_code == 400
    assert lake.get(key) == data


@pytest.mark.s3
def test_a_multipart_complete_cannot_replace_a_recorded_blob(lake_world: LakeWorld) -> None:
    """Fails on the old code: the server completed any upload over any key."""
    if lake_world.mode != "s3":
        pytest.skip("only an S3 lake uploads in parts")
    lake = lake_world.world.plane.hub.lake
    data = os.urandom(6 * MiB)
    key = blob_key(hash_bytes(data))

    def start() -> dict[str, Any]:
        r = _post(lake_world, "wendy", "/multipart", {"key": key, "size": len(data)})
        assert r.status_code == 200 and r.json()["status"] == "ok"
        return dict(r.json())

    def send(started: dict[str, Any], payload: bytes) -> Any:
        parts = []
        for part in started["parts"]:
            offset = (part["number"] - 1) * started["part_size"]
            resp = _http.request("PUT", part["url"], body=payload[offset : offset + part["size"]])
            assert resp.status == 200
            parts.append({"number": part["number"], "etag": resp.headers["ETag"]})
        return _post(
            lake_world,
            "wendy",
            "/multipart/complete",
            {"key": key, "upload_id": started["upload_id"], "parts": parts},
        )

    attack = start()  # started before the real upload lands: the key is free then
    real = start()
    assert send(real, data).json()["status"] == "stored"
    assert _post(lake_world, "wendy", "/blobs", {"digest": key[6:8] + key[9:], "size": len(data)})
    done = send(attack, os.urandom(len(data)))
    assert done.status_code == 200 and done.json()["status"] == "exists"
    assert lake.get(key) == data


def test_a_digest_copied_from_a_hidden_dataset_grants_nothing(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """Wendy writes xray and cannot read ``other``; she has one of its digests. Fails on the
    old code: ``known`` said stored, ``locate`` said where, and the commit was accepted."""
    plane = lake_world.world.plane
    catalog = plane.hub.catalog
    entry = Dataset("other", hub=plane.hub).files()[0]
    d = entry.digest
    assert _post(lake_world, "wendy", "/known", {"digests": [d]}).json()["known"] == []
    assert _post(lake_world, "wendy", "/locate", {"digests": [d]}).json()["blobs"] == []
    assert _post(lake_world, "rita", "/locate", {"digests": [d]}).json()["blobs"] == []
    loc = catalog.locate_blobs([d])[d]
    assert loc.pack_id is not None
    # Not downloadable either, by key or by server URL.
    r = lake_world.call(
        "wendy",
        "POST",
        f"{LAKE}/presign",
        json={"datasets": ["xray"], "items": [{"method": "GET", "key": pack_key(loc.pack_id)}]},
    )
    assert r.status_code == 403
    r = lake_world.call("wendy", "GET", f"{LAKE}/objects/{pack_key(loc.pack_id)}?dataset=xray")
    assert r.status_code == 403

    # A commit of xray naming it, every object in place and every other check right.
    head = catalog.head("xray")
    assert head is not None
    manifest = encode_manifest([ManifestEntry("stolen.bin", d, entry.size)])
    m = hash_bytes(manifest)
    commit = Commit("xray", m, (head,), "wendy", "steal", _now(), 1, entry.size)
    plane.hub.lake.put(manifest_key(m), manifest)
    plane.hub.lake.put(commit_key(commit.id), commit.to_json())
    r = lake_world.call(
        "wendy",
        "POST",
        f"{LAKE}/commits",
        json={"commit": commit.to_json().decode(), "expected_head": head},
    )
    assert r.status_code == 400 and "did not upload" in r.json()["error"]["message"]
    assert catalog.head("xray") == head

    # Olga, who reads other, is told it is stored (her own dataset).
    r = lake_world.call(
        "olga", "POST", f"{LAKE}/known", json={"datasets": ["other"], "digests": [d]}
    )
    assert r.json()["known"] == [d]


def test_a_writer_who_holds_the_bytes_proves_it_and_commits(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """A large file identical to one in a dataset wendy cannot read: the lake holds it, so
    she is asked to send its bytes to the server (hashed there, not stored), then commits
    and pulls it. Fails on the old code only in that it never asked (a digest was enough)."""
    plane = lake_world.world.plane
    big = os.urandom(6 * MiB)
    src = tmp_path / "olga-src"
    src.mkdir()
    (src / "weights.bin").write_bytes(big)
    Dataset("other", hub=plane.hub).commit(src, "big weights")
    key = blob_key(hash_bytes(big))
    assert plane.hub.lake.exists([key])

    # A forged proof (other bytes sent to the proof URL) grants nothing.
    url = f"{LAKE}/objects/{key}?dataset=xray"
    r = lake_world.call("wendy", "PUT", url, content=os.urandom(len(big)))
    assert r.status_code == 400 and "not the object's" in r.json()["error"]["message"]
    assert _post(lake_world, "wendy", "/known", {"digests": [hash_bytes(big)]}).json() == {
        "known": []
    }

    mine = tmp_path / "wendy-src"
    mine.mkdir()
    (mine / "model.bin").write_bytes(big)
    hub = lake_world.hub("wendy", tmp_path / "client")
    name = f"proof{os.urandom(3).hex()}"
    try:
        ds = Dataset.create(name, hub=hub)
        ds.commit(mine, "same weights, my own copy")
        assert ds.pull("latest", tmp_path / "pulled").files == 1
        assert (tmp_path / "pulled" / "model.bin").read_bytes() == big
    finally:
        hub.close()
    assert plane.hub.lake.get(key) == big


def test_lineage_and_time_are_the_servers(lake_world: LakeWorld) -> None:
    """Fails on the old code: it took any parents and any created_at."""
    plane = lake_world.world.plane
    catalog = plane.hub.catalog
    plane.accounts.create_owned_dataset(
        f"lineage{os.urandom(2).hex()}", "wendy", now=plane.clock.now()
    )
    head = catalog.head("xray")
    assert head is not None
    top = catalog.get_commit("xray", head)
    older = lake_world.world.commits["v1"]

    def add(parents: tuple[str, ...], created_at: str) -> Any:
        c = Commit(
            "xray", top.manifest, parents, "wendy", "m", created_at, top.file_count, top.bytes
        )
        plane.hub.lake.put(commit_key(c.id), c.to_json())
        return lake_world.call(
            "wendy",
            "POST",
            f"{LAKE}/commits",
            json={"commit": c.to_json().decode(), "expected_head": head},
        )

    for parents in ((), (older,), (head, older), ("ab" * 32,)):
        r = add(parents, _now())
        assert r.status_code == 400 and "parent" in r.json()["error"]["message"], parents
    for when in (_now(timedelta(days=-400)), _now(timedelta(hours=2)), "2020-01-01T00:00:00"):
        r = add((head,), when)
        assert r.status_code == 400 and "created_at" in r.json()["error"]["message"], when
    assert catalog.head("xray") == head
    r = add((head,), _now())
    assert r.status_code == 201 and r.json()["parents"] == [head]
    assert catalog.head("xray") == r.json()["id"]
