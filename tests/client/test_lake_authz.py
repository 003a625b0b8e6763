"""The lake endpoints, as every kind of caller: the authorisation matrix of
``tests/server/test_authz_matrix.py``, for the routes under ``/api/v1/lake``.

Same callers, same rules (401 anonymous, 404 for no role on ``xray``, 403 for
a role too low). On this server the lake is a folder, so the multipart routes
answer a writer 400 (nothing to sign); the S3 side of them is tested in
``test_scope.py``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from server.live import PASSWORD, World, build_world
from server.test_authz_matrix import AGENT, CALLERS, Row, expected

from lakecache.data.dataset import Dataset
from lakecache.lake.objects import (
    Commit,
    blob_key,
    decode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
)
from lakecache.server.app import create_app

L = "/api/v1/lake"
_seq = itertools.count()


def _v1(w: World) -> Commit:
    return w.plane.hub.catalog.get_commit("xray", w.commits["v1"])


def _json(path: str, body: Callable[[World], dict[str, Any]]) -> Callable[..., Any]:
    return lambda w, who: (path, {"json": body(w)})


def _pack(w: World) -> dict[str, Any]:
    hub = w.plane.hub
    entry = Dataset("xray", hub=hub).files("v1", ["many"])[0]
    pid = hub.catalog.locate_blobs([entry.digest])[entry.digest].pack_id
    assert pid is not None
    count = len(decode_pack_index(hub.lake.get(pack_index_key(pid))))
    size = next(i.size for i in hub.lake.list(f"packs/{pid}.pack"))
    return {"datasets": ["xray"], "pack_id": pid, "size": size, "blob_count": count}


def _blob(w: World) -> dict[str, Any]:
    data = os.urandom(64)
    digest = hash_bytes(data)
    w.plane.hub.lake.put(blob_key(digest), data)
    return {"datasets": ["xray"], "digest": digest, "size": 64}


def _commit(w: World, who: str | None) -> tuple[str, dict[str, Any]]:
    catalog = w.plane.hub.catalog
    head = catalog.head("xray")
    assert head is not None
    top = catalog.get_commit("xray", head)
    new = Commit(
        "xray",
        top.manifest,
        (head,),
        str(who),
        f"matrix {next(_seq)}",
        datetime.now(UTC).isoformat(timespec="microseconds"),
        top.file_count,
        top.bytes,
    )
    w.plane.hub.lake.put(f"commits/{new.id}.json", new.to_json())
    return f"{L}/commits", {"json": {"commit": new.to_json().decode(), "expected_head": head}}


def _put(w: World, who: str | None) -> tuple[str, dict[str, Any]]:
    data = os.urandom(40)
    return f"{L}/objects/{blob_key(hash_bytes(data))}?dataset=xray", {"content": data}


def _new_key(w: World) -> dict[str, Any]:
    key = blob_key(hash_bytes(os.urandom(8)))
    return {"datasets": ["xray"], "key": key, "size": 6 << 20}


def _upload(extra: dict[str, Any]) -> Callable[[World], dict[str, Any]]:
    return lambda w: {**_new_key(w), "upload_id": "u1", "parts": [], **extra}


D0 = "0" * 64
ROWS = [
    Row("GET", L, "user", 200),
    Row(
        "POST",
        f"{L}/known",
        "writer",
        200,
        _json(f"{L}/known", lambda w: {"datasets": ["xray"], "digests": [D0]}),
    ),
    Row(
        "POST",
        f"{L}/locate",
        "reader",
        200,
        _json(f"{L}/locate", lambda w: {"datasets": ["xray"], "digests": [D0]}),
    ),
    Row(
        "POST",
        f"{L}/exists",
        "writer",
        200,
        _json(f"{L}/exists", lambda w: {"datasets": ["xray"], "keys": [blob_key(D0)]}),
    ),
    Row(
        "POST",
        f"{L}/presign",
        "reader",
        200,
        _json(
            f"{L}/presign",
            lambda w: {
                "datasets": ["xray"],
                "items": [{"method": "GET", "key": manifest_key(_v1(w).manifest)}],
            },
        ),
    ),
    Row(
        "POST",
        f"{L}/presign",
        "writer",
        200,
        _json(
            f"{L}/presign",
            lambda w: {
                "datasets": ["xray"],
                "items": [{"method": "PUT", "key": blob_key(D0), "size": 3}],
            },
        ),
    ),
    Row("POST", f"{L}/multipart", "writer", 400, _json(f"{L}/multipart", _new_key)),
    Row(
        "POST",
        f"{L}/multipart/parts",
        "writer",
        400,
        _json(f"{L}/multipart/parts", _upload({"part_size": 5 << 20, "numbers": [1]})),
    ),
    Row(
        "POST",
        f"{L}/multipart/complete",
        "writer",
        400,
        _json(f"{L}/multipart/complete", _upload({"parts": [{"number": 1, "etag": "x"}]})),
    ),
    Row("POST", f"{L}/multipart/abort", "writer", 204, _json(f"{L}/multipart/abort", _upload({}))),
    Row("POST", f"{L}/packs", "writer", 200, _json(f"{L}/packs", _pack)),
    Row("POST", f"{L}/blobs", "writer", 200, _json(f"{L}/blobs", _blob)),
    Row("POST", f"{L}/commits", "writer", 201, _commit),
    Row(
        "GET",
        f"{L}/commits/{{commit_id}}",
        "reader",
        200,
        lambda w, who: (f"{L}/commits/{w.commits['v1']}?dataset=xray", {}),
    ),
    Row("GET", f"{L}/log", "reader", 200, lambda w, who: (f"{L}/log?dataset=xray", {})),
    Row(
        "GET",
        f"{L}/objects/{{key}}",
        "reader",
        200,
        lambda w, who: (f"{L}/objects/{manifest_key(_v1(w).manifest)}?dataset=xray", {}),
    ),
    Row("PUT", f"{L}/objects/{{key}}", "writer", 200, _put),
]


@pytest.fixture(scope="module")
def matrix_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("lake-matrix")
    w = build_world(base / "home", base / "src", agents=False)
    now = w.plane.clock.now()
    w.plane.accounts.create_user(AGENT, PASSWORD, agent_site="local", now=now)
    _, w.tokens[AGENT] = w.plane.accounts.create_token(AGENT, "site", now=now, expires_at=None)
    # A cache of xray on her site (nobody fills it): the agent user may read xray.
    w.plane.caches().request("xray", "v1", site="local", path="images")
    try:
        yield w
    finally:
        w.server.stop()
        w.plane.close()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.template} {r.needs}")
def test_each_caller_gets_what_its_role_allows(matrix_world: World, row: Row) -> None:
    got = {}
    for who in CALLERS:
        path, kw = row.request(matrix_world, who)
        r = matrix_world.call(who, row.method, path, **kw)
        got[who] = r.status_code
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error"} and {"code", "message", "hint"} <= set(body["error"])
            if r.status_code == 404:
                assert body["error"]["message"] == "no dataset named 'xray'"
    assert got == {who: expected(row, who) for who in CALLERS}


def test_the_rows_cover_every_lake_route(matrix_world: World) -> None:
    app = create_app(matrix_world.settings, matrix_world.plane.config, plane=matrix_world.plane)
    spec = app.openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops if p.startswith(L)}
    assert routes == {(r.method, r.template) for r in ROWS}
