"""The REST API as the dashboard and the CLI use it: datasets, history, files, diffs, caches."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from server.live import World, jpeg_bytes, png_bytes, wait_for


def raw_get(world: World, path: str, who: str = "admin") -> tuple[int, dict[str, str], bytes]:
    """A GET with the path sent exactly as given (httpx would normalise '..' away)."""
    url = urlsplit(world.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {world.tokens[who]}")
        conn.endheaders()
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_dataset_list_has_stats_search_and_pages(world: World) -> None:
    body = world.call("rita", "GET", "/api/v1/datasets").json()
    assert body["total"] == 1 and body["next_cursor"] is None
    (xray,) = body["items"]
    assert xray["name"] == "xray" and xray["role"] == "reader"
    assert xray["commit_count"] == 2 and xray["head"] == world.commits["v2"]
    assert xray["file_count"] > 250 and xray["bytes"] > 0
    assert world.call("admin", "GET", "/api/v1/datasets?q=zebra").json()["items"] == []
    assert [
        d["name"] for d in world.call("admin", "GET", "/api/v1/datasets?q=CHEST").json()["items"]
    ] == ["xray"]
    first = world.call("admin", "GET", "/api/v1/datasets?limit=1").json()
    assert len(first["items"]) == 1 and first["total"] == 2 and first["next_cursor"]
    second = world.call(
        "admin", "GET", f"/api/v1/datasets?limit=1&cursor={first['next_cursor']}"
    ).json()
    assert second["next_cursor"] is None
    assert {first["items"][0]["name"], second["items"][0]["name"]} == {"hidden", "xray"}


def test_commit_log_has_parents_and_tags(world: World) -> None:
    log = world.call("rita", "GET", "/api/v1/datasets/xray/commits").json()
    v2, v1 = log["items"]
    assert (v2["id"], v1["id"]) == (world.commits["v2"], world.commits["v1"])
    assert v2["parents"] == [v1["id"]] and v1["parents"] == [] and v1["tags"] == ["v1"]
    assert v2["message"] == "second" and v2["author"] == "tester"
    one = world.call("rita", "GET", f"/api/v1/datasets/xray/commits/{v1['id'][:10]}").json()
    assert one["id"] == v1["id"]
    page = world.call("rita", "GET", "/api/v1/datasets/xray/commits?limit=1").json()
    rest = world.call(
        "rita", "GET", f"/api/v1/datasets/xray/commits?limit=1&cursor={page['next_cursor']}"
    ).json()
    assert [c["id"] for c in page["items"] + rest["items"]] == [v2["id"], v1["id"]]


def test_folder_listing_pages_by_key_through_a_big_folder(world: World) -> None:
    root = world.call("rita", "GET", "/api/v1/datasets/xray/commits/v1/tree").json()
    assert [i["name"] for i in root["items"]] == ["docs", "images", "many", "empty.bin"]
    assert root["items"][2]["type"] == "folder" and root["items"][2]["files"] == 253
    assert root["folder_files"] == root["items"][2]["files"] + 3 + 2 + 1
    names, cursor, pages = [], None, 0
    while True:
        q = "limit=100" + (f"&cursor={cursor}" if cursor else "")
        page = world.call("rita", "GET", f"/api/v1/datasets/xray/commits/v1/tree/many?{q}").json()
        names += [i["name"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and len(names) == 253 == len(set(names))
    assert (
        names[:3] == ["sub0", "sub1", "sub2"]
        and names[3] == "f0000.bin"
        and names[-1] == "f0249.bin"
    )
    images = world.call("rita", "GET", "/api/v1/datasets/xray/commits/v1/tree/images").json()
    assert {i["name"]: i["content_type"] for i in images["items"]} == {
        "a.png": "image/png",
        "b.jpg": "image/jpeg",
    }
    one = world.call("rita", "GET", "/api/v1/datasets/xray/commits/v1/tree/images/a.png").json()
    assert [i["path"] for i in one["items"]] == ["images/a.png"]
    missing = world.call("rita", "GET", "/api/v1/datasets/xray/commits/v1/tree/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = world.call("rita", "GET", "/api/v1/datasets/xray/commits/v1/tree/many?cursor=%%%")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_files_stream_with_content_types_and_etags(world: World) -> None:
    base = "/api/v1/datasets/xray/commits"
    png = world.call("rita", "GET", f"{base}/v1/files/images/a.png")
    assert png.status_code == 200 and png.content == png_bytes()
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"].startswith("inline")
    assert png.headers["x-content-type-options"] == "nosniff"
    jpg = world.call("rita", "GET", f"{base}/v1/files/images/b.jpg")
    assert jpg.content == jpeg_bytes() and jpg.headers["content-type"] == "image/jpeg"
    newer = world.call("rita", "GET", f"{base}/latest/files/images/a.png")
    assert newer.content == png_bytes((1, 2, 3)) and newer.headers["etag"] != png.headers["etag"]
    again = world.call(
        "rita",
        "GET",
        f"{base}/v1/files/images/a.png",
        headers={"If-None-Match": png.headers["etag"]},
    )
    assert again.status_code == 304 and again.content == b""
    for name in ("evil.html", "logo.svg"):  # never rendered on the dashboard's origin
        r = world.call("rita", "GET", f"{base}/v1/files/docs/{name}")
        assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in r.headers["content-security-policy"]
    empty = world.call("rita", "GET", f"{base}/v1/files/empty.bin")
    assert empty.status_code == 200 and empty.content == b""
    folder = world.call("rita", "GET", f"{base}/v1/files/images")
    assert folder.status_code == 404 and "folder" in folder.json()["error"]["hint"]
    gone = world.call("rita", "GET", f"{base}/latest/files/docs/readme.txt")
    assert gone.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/datasets/xray/commits/v1/files/../../../etc/passwd",
        "/api/v1/datasets/xray/commits/v1/files/images/../../secret",
        "/api/v1/datasets/xray/commits/v1/files/..%2f..%2fetc%2fpasswd",
        "/api/v1/datasets/xray/commits/v1/files/images%2fa.png",
        "/api/v1/datasets/xray/commits/v1/files/%2e%2e/x",
        "/api/v1/datasets/xray/commits/v1/files//etc/passwd",
        "/api/v1/datasets/xray/commits/v1/tree//etc",
        "/api/v1/datasets/xray/commits/v1/tree/..",
        "/api/v1/datasets/xray/commits/v1/files/images\\a.png",
        "/api/v1/datasets/xray/commits/v1/files/%00",
        "/api/v1/datasets/..%2fhidden",
        "/api/v1/datasets/xray/commits/v1/files/./images/a.png",
    ],
)
def test_path_traversal_is_refused(world: World, path: str) -> None:
    status, headers, body = raw_get(world, path)
    assert status == 400, (status, body[:200])
    assert b'"invalid_path"' in body


def test_diff_counts_and_pages(world: World) -> None:
    d = world.call("rita", "GET", "/api/v1/datasets/xray/diff?from=v1&to=latest").json()
    assert (d["added"], d["removed"], d["modified"]) == (1, 1, 1)
    assert {c["path"]: c["status"] for c in d["items"]} == {
        "images/a.png": "modified",
        "docs/readme.txt": "removed",
        "docs/new.txt": "added",
    }
    assert d["from_commit"] == world.commits["v1"] and d["to_commit"] == world.commits["v2"]
    page = world.call("rita", "GET", "/api/v1/datasets/xray/diff?from=v1&limit=2").json()
    rest = world.call(
        "rita", "GET", f"/api/v1/datasets/xray/diff?from=v1&limit=2&cursor={page['next_cursor']}"
    ).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert world.call("rita", "GET", "/api/v1/datasets/xray/diff").status_code == 422


def test_cache_on_a_site_fills_and_clears(world: World) -> None:
    r = world.call(
        "wendy", "POST", "/api/v1/datasets/xray/caches", json={"ref": "v1", "site": "local"}
    )
    assert r.status_code == 202, r.text
    cache = r.json()
    assert (
        cache["state"] in ("pending", "filling", "ready") and cache["commit"] == world.commits["v1"]
    )

    def ready() -> dict | None:
        c = world.call("rita", "GET", f"/api/v1/caches/{cache['id']}").json()
        return c if c["state"] == "ready" else None

    done = wait_for(ready)
    assert done["progress"] == 1.0 and done["bytes"] > 0 and done["expires_in_seconds"] > 0
    listed = world.call("rita", "GET", "/api/v1/datasets").json()["items"][0]["cached"]
    assert {"site": "local", "volume": "local", "state": "ready"}.items() <= listed[0].items()
    vol = world.call("nora", "GET", "/api/v1/volumes/local").json()
    assert vol["committed"] >= done["bytes"] - done["linked_bytes"] and vol["caches"] >= 1
    assert vol["available"] <= vol["capacity"] - vol["committed"]
    metrics = world.call(None, "GET", "/metrics").text
    assert 'lakecache_caches{site="local",state="ready",volume="local"}' in metrics
    assert "lakecache_volume_capacity_bytes" in metrics and "lakecache_volume_free_bytes" in metrics
    assert (
        'lakecache_cache_fill_duration_seconds_count{outcome="ready",site="local",volume="local"}'
        in metrics
    )
    assert "lakecache_cache_fill_bytes_total" in metrics and "xray" not in metrics

    assert world.call("rita", "DELETE", f"/api/v1/caches/{cache['id']}").status_code == 403
    pinned = world.call("wendy", "PATCH", f"/api/v1/caches/{cache['id']}", json={"pinned": True})
    assert pinned.json()["pinned"] is True
    refused = world.call("wendy", "DELETE", f"/api/v1/caches/{cache['id']}")
    assert refused.status_code == 409 and "pinned" in refused.json()["error"]["message"]
    world.call("wendy", "PATCH", f"/api/v1/caches/{cache['id']}", json={"pinned": False})
    assert world.call("wendy", "DELETE", f"/api/v1/caches/{cache['id']}").status_code == 202
    wait_for(
        lambda: (
            world.call("rita", "GET", f"/api/v1/caches/{cache['id']}").json()["state"] == "evicted"
        )
    )
    assert world.call("rita", "GET", "/api/v1/caches").json()["items"] == []
    assert world.call("rita", "GET", "/api/v1/caches?state=evicted").json()["total"] >= 1


def test_errors_have_one_shape(world: World) -> None:
    cases = [
        ("GET", "/api/v1/nowhere", 404, "not_found"),
        ("DELETE", "/api/v1/sites", 405, "method_not_allowed"),
        ("GET", "/api/v1/datasets/xray/commits/nosuchref", 404, "not_found"),
        ("GET", "/api/v1/datasets/xray/commits/abc", 404, "not_found"),
        ("GET", "/api/v1/datasets?limit=0", 422, "validation_error"),
        ("POST", "/api/v1/datasets", 422, "validation_error"),
        ("POST", "/api/v1/datasets/xray/caches", 400, "invalid_request"),
    ]
    for method, path, status, code in cases:
        r = world.call("admin", method, path, json={} if method == "POST" else None)
        assert r.status_code == status, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == code and err["message"] and isinstance(err["hint"], str)
        assert "Traceback" not in r.text
    dup = world.call("admin", "POST", "/api/v1/datasets", json={"name": "xray"})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "already_exists"
    anon = world.call(None, "GET", "/api/v1/datasets")
    assert anon.status_code == 401 and anon.headers["www-authenticate"].startswith("Bearer")


def test_health_spec_and_server_info(world: World) -> None:
    assert world.call(None, "GET", "/healthz").json() == {
        "status": "ok",
        "catalog": "ok",
        "version": "0.1.0",
    }
    spec = world.call(None, "GET", "/api/v1/openapi.json").json()
    assert "/api/v1/datasets/{dataset}/commits/{ref}/tree/{path}" in spec["paths"]
    info = world.call("admin", "GET", "/api/v1/server").json()
    assert info["agents"] == ["local"] and info["lake"].endswith("lake")


def test_members_and_tags_round_trip(world: World) -> None:
    alice = world.call(
        "alice", "PUT", "/api/v1/datasets/xray/members/nora", json={"role": "reader"}
    )
    assert alice.status_code == 200
    assert world.call("nora", "GET", "/api/v1/datasets/xray").json()["role"] == "reader"
    members = world.call("nora", "GET", "/api/v1/datasets/xray/members").json()["items"]
    assert {m["user"]: m["role"] for m in members}["nora"] == "reader"
    assert world.call("alice", "DELETE", "/api/v1/datasets/xray/members/nora").status_code == 204
    assert world.call("nora", "GET", "/api/v1/datasets/xray").status_code == 404
    last = world.call("alice", "DELETE", "/api/v1/datasets/xray/members/alice")
    assert last.status_code == 409 and "last admin" in last.json()["error"]["message"]
    tag = world.call("wendy", "PUT", "/api/v1/datasets/xray/tags/good", json={"ref": "latest"})
    assert tag.json() == {"name": "good", "commit": world.commits["v2"]}
    moved = world.call("wendy", "PUT", "/api/v1/datasets/xray/tags/good", json={"ref": "v1"})
    assert moved.status_code == 409
    tags = world.call("rita", "GET", "/api/v1/datasets/xray/tags").json()["items"]
    assert {t["name"] for t in tags} >= {"good", "v1"}
    assert world.call("wendy", "DELETE", "/api/v1/datasets/xray/tags/good").status_code == 204
    assert world.call("wendy", "DELETE", "/api/v1/datasets/xray/tags/good").status_code == 404


def test_dataset_delete_waits_for_its_caches(world: World) -> None:
    made = world.call("rita", "POST", "/api/v1/datasets", json={"name": "scratch"})
    assert made.status_code == 201 and made.json()["role"] == "admin"
    from server.live import make_source

    src = make_source(world.settings.home.parent / "scratch-src", many=3)
    from lakecache.data.dataset import Dataset
    from lakecache.data.hub import Hub

    hub = Hub(world.settings)
    try:
        Dataset("scratch", hub=hub).commit(src, "one")
    finally:
        hub.close()
    cache = world.call(
        "rita", "POST", "/api/v1/datasets/scratch/caches", json={"site": "local"}
    ).json()
    wait_for(
        lambda: (
            world.call("rita", "GET", f"/api/v1/caches/{cache['id']}").json()["state"] == "ready"
        )
    )
    busy = world.call("rita", "DELETE", "/api/v1/datasets/scratch")
    assert busy.status_code == 409 and "cache" in busy.json()["error"]["message"]
    world.call("rita", "DELETE", f"/api/v1/caches/{cache['id']}")
    wait_for(
        lambda: (
            world.call("rita", "GET", f"/api/v1/caches/{cache['id']}").json()["state"] == "evicted"
        )
    )
    assert world.call("rita", "DELETE", "/api/v1/datasets/scratch").status_code == 204
    assert world.call("admin", "GET", "/api/v1/datasets/scratch").status_code == 404


def test_the_server_drops_uploads_a_killed_commit_left_open(world: World) -> None:
    import os
    import time

    lake_root = world.plane.hub.lake.url
    packs = os.path.join(lake_root, "packs")
    os.makedirs(packs, exist_ok=True)
    stale, fresh = os.path.join(packs, ".tmp-killed"), os.path.join(packs, ".tmp-running")
    for path in (stale, fresh):
        with open(path, "wb") as f:
            f.write(b"half a pack")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    # The server's default: uploads open for over a day are dropped, younger ones kept.
    assert world.plane.maintain_once() == 1
    assert not os.path.exists(stale) and os.path.exists(fresh)
    os.unlink(fresh)


def test_the_api_reference_page_needs_no_cdn(world: World) -> None:
    import re

    page = world.call(None, "GET", "/api/v1/docs")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from elsewhere
    for src in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
        asset = world.call(None, "GET", src)
        assert asset.status_code == 200 and asset.content, src
    assert world.call(None, "GET", "/api/v1/docs/assets/index.html").status_code == 404
    assert world.call(None, "GET", "/api/v1/docs/assets/..%2f..%2f__init__.py").status_code in (
        400,
        404,
    )
