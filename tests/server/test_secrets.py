"""The lake's credentials appear in no response and no log line, whatever is asked."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from lakecache.server import ControlPlane, ServerConfig, create_app, logs
from lakecache.settings import Settings
from server.live import LiveServer, World, wait_for

pytestmark = pytest.mark.s3


def exercise(world: World, who: str = "admin", *, wait: bool = True) -> list[httpx.Response]:
    """Every kind of request: reads, files, listings, errors, caches, spec, metrics."""
    x = "/api/v1/datasets/xray"
    paths = [
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/server",
        "/api/v1/sites",
        "/api/v1/volumes",
        "/api/v1/compute",
        "/api/v1/caches",
        "/api/v1/datasets",
        "/api/v1/users",
        "/api/v1/tokens",
        x,
        f"{x}/commits",
        f"{x}/commits/v1",
        f"{x}/commits/v1/tree",
        f"{x}/commits/v1/tree/many",
        f"{x}/commits/v1/files/images/a.png",
        f"{x}/commits/latest/files/docs/new.txt",
        f"{x}/diff?from=v1",
        f"{x}/members",
        f"{x}/tags",
        f"{x}/commits/v1/files/nope",
        "/api/v1/nowhere",
        f"{x}/commits/zzzz",
    ]
    out = [world.call(who, "GET", p) for p in paths]
    out.append(world.call(None, "GET", "/api/v1/datasets"))
    out.append(
        world.call(
            who, "POST", "/api/v1/auth/login", json={"name": "admin", "password": "bad-pass"}
        )
    )
    cache = world.call(
        who, "POST", f"{x}/caches", json={"ref": "v1", "site": "local", "path": "images"}
    )
    out.append(cache)
    if cache.status_code == 202 and wait:
        wait_for(
            lambda: (
                world.call(who, "GET", f"/api/v1/caches/{cache.json()['id']}").json()["state"]
                in ("ready", "failed")
            )
        )
        out.append(world.call(who, "GET", f"/api/v1/caches/{cache.json()['id']}"))
    return out


def assert_nowhere(secrets: list[str], responses: list[httpx.Response], log_text: str) -> None:
    for secret in secrets:
        for r in responses:
            assert secret not in r.text, r.request.url
            assert all(secret not in v for v in r.headers.values())
        assert secret not in log_text


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    logs.quiet_libraries()  # what `lakecache server` does, at any --log-level
    caplog.set_level(logging.DEBUG)
    return caplog


def test_s3_credentials_never_leave_the_server(
    s3_settings: Settings, world_factory: Callable[..., World], captured: pytest.LogCaptureFixture
) -> None:
    world = world_factory(settings=s3_settings)
    responses = exercise(world)
    by_path = {r.request.url.path: r for r in responses}
    assert by_path["/api/v1/datasets/xray/commits/v1/files/images/a.png"].status_code == 200
    info = by_path["/api/v1/server"].json()
    assert info["lake"].startswith("s3://") and s3_settings.s3_endpoint in info["lake"]
    assert len(captured.records) > 20  # the access log, at least, was captured
    key, secret = s3_settings.s3_access_key, s3_settings.s3_secret_key
    assert key and secret
    assert_nowhere([secret, key], responses, captured.text)


def test_a_lake_that_refuses_the_credentials_leaks_nothing(
    s3_settings: Settings, world_factory: Callable[..., World], captured: pytest.LogCaptureFixture
) -> None:
    world = world_factory(settings=s3_settings)
    # A second server on the same catalog and lake, with a wrong secret key and its own
    # state folder, so listing a commit must read the manifest from the lake.
    wrong = "WrongSecret" + "x" * 29
    settings = s3_settings.with_(s3_secret_key=wrong, home=s3_settings.home.parent / "bad")
    plane = ControlPlane.open(settings, ServerConfig(agents=False))
    server = LiveServer(create_app(settings, plane.config, plane=plane))
    try:
        bad = World(server.url, settings, plane, server, world.tokens, world.commits)
        r = bad.call("admin", "GET", "/api/v1/datasets/xray/commits/v1/tree")
        assert r.status_code in (502, 503) and r.json()["error"]["code"].startswith("lake")
        responses = [r, *exercise(bad, wait=False)]
    finally:
        server.stop()
        plane.close()
    secrets = [wrong, s3_settings.s3_secret_key or "", s3_settings.s3_access_key or ""]
    assert_nowhere(secrets, responses, captured.text)
    assert world.call("admin", "GET", "/api/v1/datasets/xray/commits/v1/tree").status_code == 200
