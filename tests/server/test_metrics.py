"""/metrics: the same figures at any number of caches, summed by the database; and who may
read it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from lakecache.catalog import Catalog
from lakecache.catalog import topology_tables as tt
from lakecache.catalog.topology import Topology
from lakecache.lake.objects import Commit
from lakecache.server.metrics import Metrics, catalog_snapshot
from lakecache.server.views import volume_usage
from server.live import World

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CACHES = 10_000
STATES = ("pending", "filling", "ready", "evicting", "evicted", "failed")


@pytest.fixture
def busy_catalog(tmp_path: Path) -> Iterator[Catalog]:
    """Two sites, three volumes and 10,000 caches in every state, as a team's server has."""
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    topo = Topology(catalog)
    for site in ("onprem", "cloud"):
        topo.add_site(site, "", NOW)
    volumes = {
        "nvme": topo.add_volume("nvme", "onprem", "/nonexistent/nvme", 10**13, 86400, NOW),
        "nfs": topo.add_volume("nfs", "onprem", "/nonexistent/nfs", 10**14, 86400, NOW),
        "pvc": topo.add_volume("pvc", "cloud", "/nonexistent/pvc", 10**12, 3600, NOW),
    }
    dataset = catalog.create_dataset("xray", "ann")
    commit = Commit("xray", "0" * 64, (), "ann", "m", NOW.isoformat(), 0, 0)
    commit_id = catalog.add_commit(commit, expected_head=None)
    rows = []
    for i in range(CACHES):
        size = 1000 + i
        rows.append(
            {
                "dataset_id": dataset.id,
                "commit_id": commit_id,
                "volume_id": list(volumes.values())[i % 3].id,
                "subpath": f"part/{i:05d}",
                "state": STATES[i % 6],
                "files": 1,
                "bytes": size,
                "done_bytes": size // 3,
                # Some caches share more than their size by links: never counted below zero.
                "linked_bytes": 0 if i % 4 else size + (i % 7) * 100,
                "fetched_bytes": size,
                "pinned": False,
                "created_at": NOW,
                "updated_at": NOW,
                "last_used_at": NOW,
            }
        )
    with catalog._write() as conn:  # noqa: SLF001 - 10,000 rows at once, as fills leave them
        conn.execute(tt.caches.insert(), rows)
    try:
        yield catalog
    finally:
        catalog.close()


#: (metric name, sorted labels) -> value.
Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Figures:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("lakecache_volume", "lakecache_cache"))
    }


def _figures_from_every_row(
    catalog: Catalog,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The figures as the code before computed them: every cache row read and summed here."""
    topo = Topology(catalog)
    caches = topo.list_caches()
    out: Figures = {}
    for v in topo.list_volumes():
        u = volume_usage(topo, v, caches)
        key = (("site", v.site), ("volume", v.name))
        out[("lakecache_volume_capacity_bytes", key)] = v.capacity
        out[("lakecache_volume_committed_bytes", key)] = u.committed
        out[("lakecache_volume_free_bytes", key)] = u.available
        out[("lakecache_volume_linked_bytes", key)] = u.linked_saved
        if u.free_fs is not None:
            out[("lakecache_volume_filesystem_free_bytes", key)] = u.free_fs
        mine = [c for c in caches if c.volume == v.name]
        for state in STATES:
            of_state = [c for c in mine if c.state == state]
            labels = tuple(sorted({"site": v.site, "volume": v.name, "state": state}.items()))
            out[("lakecache_caches", labels)] = len(of_state)
            out[("lakecache_cache_bytes", labels)] = sum(c.bytes for c in of_state)
        filling = sum(c.done_bytes for c in mine if c.state == "filling")
        out[("lakecache_cache_filling_done_bytes", key)] = filling
    return out


def test_a_scrape_sums_10000_caches_in_the_database_with_the_same_figures(
    busy_catalog: Catalog,
) -> None:
    """Fails on the code before: it read all 10,000 cache rows (one SELECT without GROUP BY)
    into Python on every scrape."""
    # The volumes are not mounted here: free space is the quota left (the disk's moves).
    metrics = Metrics()
    metrics.watch_catalog(lambda: catalog_snapshot(busy_catalog))
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    engine = busy_catalog._engine  # noqa: SLF001 - watch what a scrape asks the database
    event.listen(engine, "before_cursor_execute", note)
    try:
        started = time.perf_counter()
        text = metrics.render().decode()
        took = time.perf_counter() - started
    finally:
        event.remove(engine, "before_cursor_execute", note)
    on_caches = [s for s in statements if " from caches" in s]
    assert on_caches and all("group by" in s for s in on_caches), statements
    assert len(statements) <= 4  # volumes, the totals; never one query per volume or cache
    got = _samples(text)
    want = _figures_from_every_row(busy_catalog)
    assert {k: got.get(k) for k in want} == want
    assert sum(v for (name, _), v in got.items() if name == "lakecache_caches") == CACHES
    # Loose on a shared 2-core machine; reading every row took several times longer.
    assert took < 2.0, took


@pytest.fixture(scope="module")
def closed_world(world_factory: Callable[..., World]) -> World:
    w = world_factory(agents=False, metrics_public=False, metrics_token="scraper-" + "s" * 24)
    now = w.plane.clock.now()
    w.plane.accounts.create_user("agent", "agent-password-1", agent_site="local", now=now)
    _, w.tokens["agent"] = w.plane.accounts.create_token("agent", "a", now=now, expires_at=None)
    return w


def test_metrics_can_be_closed_to_all_but_org_admins_and_the_scraper(closed_world: World) -> None:
    """Fails on the code before: /metrics was open to anyone, with no setting to close it."""
    url = f"{closed_world.url}/metrics"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=bearer("scraper-" + "x" * 24)).status_code == 401
    assert closed_world.call("rita", "GET", "/metrics").status_code == 403
    assert closed_world.call("agent", "GET", "/metrics").status_code == 403
    scraped = httpx.get(url, headers=bearer("scraper-" + "s" * 24))
    assert scraped.status_code == 200 and "lakecache_volume_capacity_bytes" in scraped.text
    assert closed_world.call("admin", "GET", "/metrics").status_code == 200
    # An org admin's dashboard session reads it too.
    with httpx.Client(base_url=closed_world.url) as browser:
        login = {"name": "admin", "password": "admin-password-1"}
        assert browser.post("/api/v1/auth/login", json=login).status_code == 200
        assert browser.get("/metrics").status_code == 200
