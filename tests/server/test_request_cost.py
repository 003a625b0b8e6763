"""What a request costs the catalog, and what the server keeps to spare it.

Browsing a commit by its id asks the catalog nothing once the server has seen the
caller and the commit; credentials and read roles are kept a few seconds
(:data:`~lakecache.server.lookups.CREDENTIAL_CACHE_SECONDS`), and rights taken away
apply at once on the server that took them, within that time on any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from lakecache import Dataset
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.db import Catalog
from lakecache.data.hub import Hub
from lakecache.server.lookups import CREDENTIAL_CACHE_SECONDS
from server.live import PASSWORD, World, png_bytes

LOGIN = "/api/v1/auth/login"
#: What anyio names the threads that run FastAPI's sync routes and dependencies.
REQUEST_THREAD = "AnyIO worker thread"


@pytest.fixture(scope="module")
def cost_world(world_factory: Callable[..., World]) -> World:
    return world_factory(agents=False)


@pytest.fixture
def short_cache(cost_world: World) -> Iterator[float]:
    """The kept credentials last 1 s here, so that a test waits for them to lapse quickly."""
    credentials = cost_world.plane.credentials
    before = credentials.ttl
    credentials.ttl = 1.0
    try:
        yield credentials.ttl
    finally:
        credentials.ttl = before


@contextmanager
def counted(world: World) -> Iterator[list[str]]:
    """Every SQL statement the server's catalog runs for requests inside the block (in the
    threads that serve requests: not the flow advancer's or the agents' own)."""
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if threading.current_thread().name == REQUEST_THREAD:
            statements.append(statement)

    engine = world.plane.hub.catalog._engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


@contextmanager
def elsewhere(world: World) -> Iterator[Accounts]:
    """The accounts as another replica (or the CLI on the catalog) changes them: not through
    this server's plane, so it is not told."""
    with Catalog.open(world.settings.catalog_url) as catalog:
        yield Accounts(catalog)


def tree(world: World) -> str:
    return f"/api/v1/datasets/xray/commits/{world.commits['v2']}/tree/images"


def until(predicate: Callable[[], bool], limit: float) -> float:
    """Seconds until ``predicate`` held; fails past ``limit``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < limit, f"still not so after {limit} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_warm_folder_listing_asks_the_catalog_nothing(cost_world: World) -> None:
    with cost_world.client("rita") as c:
        assert c.get(tree(cost_world)).status_code == 200  # reads the caller, role, commit
        with counted(cost_world) as statements:
            for _ in range(5):
                r = c.get(tree(cost_world), params={"limit": 10})
                assert r.status_code == 200 and r.json()["items"]
    assert statements == []


def test_the_dataset_list_costs_the_same_for_many_datasets(cost_world: World) -> None:
    """The list's stats come in a fixed number of queries, not a few per dataset."""

    def cost() -> int:
        with cost_world.client("admin") as c:
            c.get("/api/v1/datasets").raise_for_status()
            with counted(cost_world) as statements:
                assert c.get("/api/v1/datasets").status_code == 200
        return len(statements)

    before = cost()
    assert before > 0  # the list itself, the caches and the stats: requests are counted
    now = cost_world.plane.clock.now()
    for i in range(6):
        cost_world.plane.accounts.create_owned_dataset(f"many-{i}", "admin", "", now=now)
    listed = cost_world.call("admin", "GET", "/api/v1/datasets").json()
    assert {f"many-{i}" for i in range(6)} <= {d["name"] for d in listed["items"]}
    assert cost() == before


def test_a_token_revoked_here_stops_at_once(cost_world: World) -> None:
    made = cost_world.call("wendy", "POST", "/api/v1/tokens", json={"name": "soon-gone"})
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["id"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cost_world.url, headers=headers, timeout=30) as c:
        assert c.get(tree(cost_world)).status_code == 200  # now kept by the server
        assert c.delete(f"/api/v1/tokens/{token_id}").status_code == 204
        assert c.get(tree(cost_world)).status_code == 401


def test_a_token_revoked_elsewhere_stops_within_the_cache_time(
    cost_world: World, short_cache: float
) -> None:
    made = cost_world.call("wendy", "POST", "/api/v1/tokens", json={"name": "other-replica"})
    token, token_id = made.json()["token"], made.json()["id"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cost_world.url, headers=headers, timeout=30) as c:
        assert c.get(tree(cost_world)).status_code == 200
        with elsewhere(cost_world) as accounts:
            accounts.revoke_token(token_id, now=cost_world.plane.clock.now())
        # A change (not a read) is checked in the catalog, however recent the kept token.
        assert c.post("/api/v1/tokens", json={"name": "x"}).status_code == 401
        took = until(lambda: c.get(tree(cost_world)).status_code == 401, short_cache + 2)
    assert took <= short_cache + 1


def test_a_session_ended_elsewhere_stops_within_the_cache_time(
    cost_world: World, short_cache: float
) -> None:
    c = httpx.Client(base_url=cost_world.url, timeout=30)
    with closing(c):
        assert c.post(LOGIN, json={"name": "rita", "password": PASSWORD}).status_code == 200
        assert c.get(tree(cost_world)).status_code == 200
        with elsewhere(cost_world) as accounts:
            accounts.delete_session(c.cookies["lakecache_session"])
        took = until(lambda: c.get(tree(cost_world)).status_code == 401, short_cache + 2)
    assert took <= short_cache + 1


def test_a_session_is_never_served_past_its_end(cost_world: World) -> None:
    plane = cost_world.plane
    ttl: timedelta = plane.config.session_ttl
    c = httpx.Client(base_url=cost_world.url, timeout=30)
    with closing(c):
        assert c.post(LOGIN, json={"name": "rita", "password": PASSWORD}).status_code == 200
        assert c.get(tree(cost_world)).status_code == 200
        key = plane.credentials.credential_key("session", c.cookies["lakecache_session"])
        kept = plane.credentials.principal(key, plane.clock.now())
        assert kept is not None and kept.user.name == "rita"
        # Read a second ago, but the session ended since: not served.
        assert plane.credentials.principal(key, plane.clock.now() + ttl) is None


def test_a_token_is_never_served_past_its_end(cost_world: World) -> None:
    plane = cost_world.plane
    now = plane.clock.now()
    ends = now + timedelta(seconds=2)
    _, token = plane.accounts.create_token("wendy", "ends-soon", now=now, expires_at=ends)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cost_world.url, headers=headers, timeout=30) as c:
        assert c.get(tree(cost_world)).status_code == 200
    key = plane.credentials.credential_key("token", token)
    assert plane.credentials.principal(key, plane.clock.now()) is not None
    # Read under 2.1 s before (kept entries last at least half of the 5 s), but the token
    # has ended since: not served.
    assert plane.credentials.ttl / 2 > 2.1
    assert plane.credentials.principal(key, ends + timedelta(seconds=0.1)) is None


def test_a_member_removed_here_loses_the_dataset_at_once(cost_world: World) -> None:
    now = cost_world.plane.clock.now()
    cost_world.plane.accounts.create_user("remy", PASSWORD, now=now)
    cost_world.plane.accounts.set_member("xray", "remy", "reader", now=now)
    _, token = cost_world.plane.accounts.create_token("remy", "t", now=now, expires_at=None)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cost_world.url, headers=headers, timeout=30) as c:
        assert c.get(tree(cost_world)).status_code == 200  # role kept
        removed = cost_world.call("alice", "DELETE", "/api/v1/datasets/xray/members/remy")
        assert removed.status_code == 204
        assert c.get(tree(cost_world)).status_code == 404  # the same 404 as no dataset


def test_a_member_removed_elsewhere_loses_it_within_the_cache_time(
    cost_world: World, short_cache: float
) -> None:
    now = cost_world.plane.clock.now()
    cost_world.plane.accounts.create_user("remo", PASSWORD, now=now)
    cost_world.plane.accounts.set_member("xray", "remo", "writer", now=now)
    _, token = cost_world.plane.accounts.create_token("remo", "t", now=now, expires_at=None)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cost_world.url, headers=headers, timeout=30) as c:
        assert c.get(tree(cost_world)).status_code == 200
        with elsewhere(cost_world) as accounts:
            accounts.set_member("xray", "remo", "reader", now=now)
        # Writing needs the catalog's word: a demoted writer cannot tag, kept role or not.
        tag = c.put("/api/v1/datasets/xray/tags/remo-tag", json={"ref": "latest"})
        assert tag.status_code == 403
        with elsewhere(cost_world) as accounts:
            accounts.remove_member("xray", "remo")
        took = until(lambda: c.get(tree(cost_world)).status_code == 404, short_cache + 2)
    assert took <= short_cache + 1


def test_the_documented_bound_is_short() -> None:
    assert 0 < CREDENTIAL_CACHE_SECONDS <= 10


def test_a_dataset_made_again_never_shows_the_old_ones_commit(
    cost_world: World, tmp_path: Path
) -> None:
    """Commits are kept by dataset identity: the same name later is another dataset."""
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "images" / "old.png").write_bytes(png_bytes((9, 9, 9)))
    hub = Hub(cost_world.settings)
    try:
        old = Dataset.create("again", hub=hub).commit(src, "old").id
    finally:
        hub.close()
    path = f"/api/v1/datasets/again/commits/{old}/tree/images"
    assert cost_world.call("admin", "GET", path).status_code == 200  # the commit is now kept
    assert cost_world.call("admin", "DELETE", "/api/v1/datasets/again").status_code == 204
    assert cost_world.call("admin", "POST", "/api/v1/datasets", json={"name": "again"}).is_success
    gone = cost_world.call("admin", "GET", path)
    assert gone.status_code == 404, gone.text


def test_a_commits_page_is_made_once_and_revalidates_by_its_etag(cost_world: World) -> None:
    """A folder's page of a commit never changes: kept as sent, and a client that has it
    gets an empty 304 for its ETag."""
    path = tree(cost_world)
    pages = cost_world.plane.pages
    with cost_world.client("rita") as c:
        first = c.get(path, params={"limit": 1})
        assert first.status_code == 200 and first.headers["content-type"] == "application/json"
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, no-cache"
        kept = len(pages)
        with counted(cost_world) as statements:
            again = c.get(path, params={"limit": 1})
        assert statements == [] and len(pages) == kept  # the kept page, nothing read again
        assert again.content == first.content and again.headers["etag"] == etag
        assert first.json()["items"] and first.json()["next_cursor"]  # a real page of 1
        same = c.get(path, params={"limit": 1}, headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
        listed = c.get(path, params={"limit": 1}, headers={"If-None-Match": f'"x", W/{etag}'})
        assert listed.status_code == 304  # one of several, and a weak form of it, match
        other = c.get(path, params={"limit": 2}, headers={"If-None-Match": etag})
        assert other.status_code == 200 and other.headers["etag"] != etag
        assert len(other.json()["items"]) == 2
        cursor = first.json()["next_cursor"]
        second = c.get(path, params={"limit": 1, "cursor": cursor})
        assert second.status_code == 200 and second.headers["etag"] != etag
        assert second.json()["items"][0]["name"] > first.json()["items"][-1]["name"]


def test_a_kept_page_is_refused_to_who_may_not_read_it(cost_world: World) -> None:
    """The rights check comes before the kept page: its ETag opens nothing."""
    path = tree(cost_world)
    with cost_world.client("admin") as c:
        etag = c.get(path).headers["etag"]
    with cost_world.client("nora") as c:  # no role on the dataset
        refused = c.get(path, headers={"If-None-Match": etag})
        assert refused.status_code == 404 and etag not in refused.headers.get("etag", "")
    assert cost_world.call(None, "GET", path, headers={"If-None-Match": etag}).status_code == 401


def test_the_kept_pages_stay_within_their_budget() -> None:
    from lakecache.server.lookups import PageCache

    pages = PageCache(budget=1000)
    for i in range(10):
        pages.put(i, bytes(300))
    assert pages.used <= 1000 and len(pages) == 3
    assert pages.get(0) is None and pages.get(9) is not None  # the oldest went first
    big = pages.put("big", bytes(5000))  # larger than the budget: served, not kept
    assert big.body == bytes(5000) and pages.get("big") is None and pages.used == 900
    again = pages.put(9, b"x" * 10)  # replacing an entry gives its bytes back
    assert pages.used == 610 and again.etag != pages.put(8, bytes(300)).etag


def test_a_kept_page_is_answered_without_a_worker_thread(
    cost_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rights, commit and page all kept: the route answers on the event loop. A tag (which
    moves) or a caller not seen lately still goes to the catalog, in a worker thread."""
    from lakecache.server.routes import commits

    hops: list[str] = []

    async def counting(func: Callable[..., object], *args: object) -> object:
        hops.append(func.__name__)
        return await real(func, *args)

    real = commits.run_in_threadpool
    monkeypatch.setattr(commits, "run_in_threadpool", counting)
    with cost_world.client("rita") as c:
        assert c.get(tree(cost_world)).status_code == 200
        hops.clear()
        for _ in range(3):
            assert c.get(tree(cost_world)).status_code == 200
        assert hops == []
        by_tag = c.get("/api/v1/datasets/xray/commits/v1/tree")
        assert by_tag.status_code == 200 and hops == ["_tree"]
    with cost_world.client("nora") as c:  # not a member: asked, and refused
        assert c.get(tree(cost_world)).status_code == 404
    assert hops == ["_tree", "_tree"]
