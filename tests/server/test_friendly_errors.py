"""Through a server, mistakes get the same error and hint as on the lake directly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from lakecache.catalog.names import NAME_RULE
from lakecache.errors import CatalogError
from lakecache.server.routes import datasets as datasets_api
from server.live import ADMIN_PASSWORD, PASSWORD, World


def test_a_bad_name_is_told_with_the_rule_in_words(world: World) -> None:
    r = world.call("wendy", "POST", "/api/v1/datasets", json={"name": "Chest X-rays"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["message"] == "invalid dataset name 'Chest X-rays'"
    assert error["hint"] == NAME_RULE  # what the CLI says without a server
    assert "body." not in error["message"] and "pattern" not in error["message"]
    r = world.call("admin", "POST", "/api/v1/sites", json={"name": "On Prem"})
    assert r.json()["error"]["message"] == "invalid site name 'On Prem'"


def test_an_encoded_slash_in_a_name_is_explained(world: World) -> None:
    r = world.call("wendy", "GET", "/api/v1/datasets/x%2Fray")
    assert r.status_code == 400
    assert "a name in the request path holds an encoded '/'" in r.json()["error"]["message"]


def test_a_hidden_name_is_not_available_and_a_visible_one_exists(world: World) -> None:
    hidden = world.call("wendy", "POST", "/api/v1/datasets", json={"name": "hidden"})
    assert hidden.status_code == 409
    assert hidden.json()["error"]["message"] == "the name 'hidden' is not available"
    visible = world.call("wendy", "POST", "/api/v1/datasets", json={"name": "xray"})
    assert visible.status_code == 409
    assert visible.json()["error"]["message"] == "dataset 'xray' already exists"


def test_a_disabled_account_is_told_so_only_with_the_right_password(world: World) -> None:
    now = world.plane.clock.now()
    world.plane.accounts.create_user("dora", PASSWORD, now=now)
    world.plane.accounts.update_user("dora", disabled=True)
    right = httpx.post(
        f"{world.url}/api/v1/auth/token", json={"name": "dora", "password": PASSWORD}
    )
    assert right.status_code == 403
    assert right.json()["error"]["message"] == "the account 'dora' is disabled"
    assert "user enable" in right.json()["error"]["hint"]
    wrong = httpx.post(
        f"{world.url}/api/v1/auth/token", json={"name": "dora", "password": "not-her-password"}
    )
    assert wrong.status_code == 401 and "disabled" not in wrong.text


def test_a_dashboard_page_that_fails_names_a_request_not_the_database(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        # What a catalog failure looks like: its text carries the database's address.
        raise CatalogError("cannot reach postgresql+psycopg://lc:s3cret@db.internal:5432/lc")

    monkeypatch.setattr(datasets_api, "list_datasets", broken)
    with httpx.Client(base_url=world.url, timeout=30) as c:
        c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        page = c.get("/")
    assert page.status_code == 503
    rid = page.headers["x-request-id"]
    assert f"internal error (request id {rid})" in page.text
    assert "s3cret" not in page.text and "db.internal" not in page.text


def test_the_cli_through_a_server_prints_the_same_error(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lakecache.cli.main import main

    monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("LAKECACHE_SERVER", world.url)
    monkeypatch.setenv("LAKECACHE_TOKEN", world.tokens["wendy"])
    assert main(["data", "init", "Chest X-rays"]) == 1
    err = capsys.readouterr().err
    assert "error: invalid dataset name 'Chest X-rays'" in err and NAME_RULE in err
