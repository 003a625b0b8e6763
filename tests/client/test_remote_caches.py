"""Sites, volumes and caches through a live server: the CLI, ``lakecache.use()`` and an agent.

A machine that works through a server (``lakecache login``) fills caches on the
volumes it mounts, holds leases while runs read them, and runs a site's agent,
all through the REST API, with no catalog and no lake credentials of its own.
Each test runs against a folder lake (bytes streamed by the server) and a
SeaweedFS lake (bytes moved with presigned URLs); see ``conftest.py``.

The sites made here have no agent in the server, so whatever fills them is the
client under test.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import tree

from client.world import LakeWorld, Recorder
from lakecache.cache.agent import SiteAgent
from lakecache.cache.api import use
from lakecache.cache.service import CacheService
from lakecache.client import AccessDeniedError
from lakecache.client.topology import RemoteTopology
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import NotFoundError, UserError


def _site(lake_world: LakeWorld, tmp_path: Path, prefix: str = "edge") -> tuple[str, Path]:
    """A new site with one volume under ``tmp_path``, made by the org admin over the API."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    root = tmp_path / f"vol-{name}"
    hub = lake_world.hub("admin", tmp_path / "admin-home")
    try:
        topo = CacheService(hub).topology
        topo.add_site(name, "a site made in a test")
        topo.add_volume(name, name, str(root), 10**9, 86400)
        root.mkdir()  # mounted on this machine
    finally:
        hub.close()
    return name, root


def _expected(lake_world: LakeWorld, ref: str, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / f"expected-{ref}"
    Dataset("xray", hub=lake_world.world.plane.hub).pull(ref, out)
    return tree(out)


@pytest.fixture
def cli(
    lake_world: LakeWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str]]:
    """Run the CLI in-process as a user of the server: (exit code, stdout)."""
    from lakecache.cli.main import main

    for k in list(os.environ):
        if k.startswith(("LAKECACHE_", "AWS_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LAKECACHE_SERVER", lake_world.url)

    def run(who: str, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / f"home-{who}"))
        monkeypatch.setenv("LAKECACHE_TOKEN", lake_world.world.tokens[who])
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out + err

    return run


def test_cli_sites_volumes_and_a_cache_lifecycle_through_the_server(
    lake_world: LakeWorld, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    site = f"cli-{uuid.uuid4().hex[:6]}"
    root = tmp_path / "vol"
    # Topology is the org admin's: a writer is refused, with the reason.
    code, out = cli("wendy", "site", "add", site)
    assert code != 0 and "org admin" in out
    assert cli("admin", "site", "add", site, "-d", "over the API")[0] == 0
    code, out = cli(
        "admin", "volume", "add", site, "--site", site, "--root", str(root), "--capacity", "1GB"
    )
    assert code == 0, out
    assert cli("admin", "compute", "add", f"{site}-cpu", "--site", site)[0] == 0
    code, out = cli("admin", "compute", "add", "x", "--site", site, "--config", '{"a": 1}')
    assert code != 0 and "config file" in out  # backend settings stay on the server
    code, out = cli("rita", "site", "ls", "--json")
    sites = {s["name"]: s for s in json.loads(out)}
    assert sites[site]["volumes"] == [site] and sites[site]["compute"] == [f"{site}-cpu"]

    # A writer caches v1 here: this machine mounts the volume, so it fills in place.
    code, out = cli("wendy", "cache", "add", "xray@v1", "--site", site, "--json", "-q")
    assert code == 0, out
    row = json.loads(out)
    assert row["state"] == "ready" and row["volume"] == site
    path = root / "caches" / "xray" / lake_world.world.commits["v1"]
    assert tree(path) == _expected(lake_world, "v1", tmp_path)
    server = lake_world.world.plane.topology.get_cache(row["id"])
    assert server.state == "ready" and server.fetched_bytes > 0 and server.worker is None

    # The latest commit shares most files with v1: they are hard-linked, not fetched again.
    code, out = cli("wendy", "cache", "add", "xray@latest", "--volume", site, "--json", "-q")
    second = json.loads(out)
    assert code == 0 and second["state"] == "ready" and second["linked_bytes"] > 0

    code, out = cli("rita", "volume", "ls", "--site", site, "--json")
    (vol,) = json.loads(out)
    assert (
        vol["caches"] == 2
        and vol["committed"] == row["bytes"] + second["bytes"] - (second["linked_bytes"])
    )
    assert vol["free"] is not None  # mounted here

    code, out = cli("rita", "cache", "ls", "--site", site, "--json")
    assert code == 0 and {c["id"] for c in json.loads(out)} == {row["id"], second["id"]}
    code, out = cli("nora", "cache", "ls", "--site", site, "--json")
    assert code == 0 and json.loads(out) == []  # not a member of xray: sees no cache of it

    # Pin, verify, damage, repair, unpin, clear.
    assert cli("rita", "cache", "pin", str(row["id"]))[0] != 0  # readers cannot pin
    assert cli("wendy", "cache", "pin", str(row["id"]))[0] == 0
    assert lake_world.world.plane.topology.get_cache(row["id"]).pinned
    (path / "docs" / "readme.txt").write_bytes(b"tampered")
    code, out = cli("wendy", "cache", "verify", str(row["id"]), "--json")
    assert code == 1 and json.loads(out)["modified"] == ["docs/readme.txt"]
    assert cli("wendy", "cache", "verify", str(row["id"]), "--repair")[0] == 0
    assert (path / "docs" / "readme.txt").read_bytes() == b"hello\n"
    assert "repaired 1" in (lake_world.world.plane.topology.get_cache(row["id"]).report or "")
    code, out = cli("wendy", "cache", "rm", str(row["id"]))
    assert code != 0 and "pinned" in out
    assert cli("wendy", "cache", "rm", str(row["id"]), "--force")[0] == 0
    assert not path.exists()
    assert lake_world.world.plane.topology.get_cache(row["id"]).state == "evicted"

    code, out = cli("admin", "volume", "rm", site)
    assert code != 0 and "still holds 1 cache" in out
    assert cli("wendy", "cache", "rm", str(second["id"]))[0] == 0
    assert cli("admin", "volume", "rm", site)[0] == 0
    with pytest.raises(NotFoundError):
        lake_world.world.plane.topology.get_volume(site)


def test_use_fills_leases_and_releases_through_the_server(
    lake_world: LakeWorld, tmp_path: Path, recorder: Recorder
) -> None:
    site, root = _site(lake_world, tmp_path)
    topo = lake_world.world.plane.topology
    wendy = lake_world.settings("wendy", tmp_path / "wendy")
    # Nothing is cached: a writer's use() fills it here, then holds it.
    with use("xray@v1", site=site, settings=wendy) as p:
        assert p.is_relative_to(root) and tree(p) == _expected(lake_world, "v1", tmp_path)
        (rec,) = topo.list_caches(volume=site)
        assert rec.state == "ready" and rec.leases == 1
    assert topo.get_cache(rec.id).leases == 0
    # What the client received never held the lake's credentials.
    for secret in lake_world.secrets:
        assert not any(secret in r for r in recorder.received)

    # A reader uses the ready cache: a lease in her name while the block runs.
    rita = lake_world.settings("rita", tmp_path / "rita")
    with use("xray@v1", site=site, settings=rita) as p:
        assert (p / "images" / "a.png").is_file()
        assert topo.get_cache(rec.id).leases == 1
    assert topo.get_cache(rec.id).leases == 0
    # She may not have a new commit cached for her; she is told why and what to do.
    with pytest.raises(AccessDeniedError) as caught, use("xray@latest", site=site, settings=rita):
        pass
    assert caught.value.status == 403 and "writer" in caught.value.message
    # A machine that does not mount the site's volume is told so, not handed a bad path.
    far, far_root = _site(lake_world, tmp_path, "far")
    far_root.rmdir()
    with (
        pytest.raises(UserError, match="does not mount") as refused,
        use("xray@v1", site=far, settings=wendy),
    ):
        pass
    assert "cached=False" in (refused.value.hint or "") and not far_root.exists()
    # Without the cache she can still read it, pulled into a private folder.
    with use("xray@latest", cached=False, settings=rita) as p:
        assert tree(p) == _expected(lake_world, "latest", tmp_path)
    assert not p.exists()


def test_a_site_agent_works_through_the_server(
    lake_world: LakeWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site, root = _site(lake_world, tmp_path, "agent")
    world = lake_world.world
    # Someone clicks "Cache on ..." in the dashboard (here: its REST call).
    r = lake_world.call(
        "wendy", "POST", "/api/v1/datasets/xray/caches", json={"ref": "latest", "site": site}
    )
    assert r.status_code == 202 and r.json()["state"] == "pending"
    cache_id = r.json()["id"]

    hub = lake_world.hub("admin", tmp_path / "agent-home")
    try:
        svc = CacheService(hub)
        assert isinstance(svc.topology, RemoteTopology)
        agent = SiteAgent(svc, site, gc_every=3600)
        assert agent.run_once() == 1
        agent.wait_idle()
        rec = world.plane.topology.get_cache(cache_id)
        assert rec.state == "ready" and rec.worker is None
        path = root / "caches" / "xray" / world.commits["v2"]
        assert tree(path) == _expected(lake_world, "latest", tmp_path)

        # Clear from the dashboard: the agent removes the files on its next pass.
        assert lake_world.call("wendy", "DELETE", f"/api/v1/caches/{cache_id}").status_code == 202
        assert world.plane.topology.get_cache(cache_id).request == "evict"
        agent.run_once()
        assert world.plane.topology.get_cache(cache_id).state == "evicted"
        assert not path.exists()
        agent.close()
    finally:
        hub.close()
    # The agent told the server what the volume's filesystem holds: where the server
    # does not mount the volume (moved away here), that is the free space it shows.
    reported = world.plane.topology.get_volume(site)
    assert reported.fs_reported_at is not None and reported.fs_free and reported.fs_total
    root.rename(root.with_name(root.name + "-elsewhere"))
    vol = lake_world.call("rita", "GET", f"/api/v1/volumes/{site}").json()
    assert vol["free_fs"] == reported.fs_free and vol["space_reported_at"] is not None
    assert lake_world.call("wendy", "PUT", f"/api/v1/volumes/{site}/space", json={
        "free_bytes": 1, "total_bytes": 2}).status_code == 403  # fmt: skip
    metrics = lake_world.call(None, "GET", "/metrics").text
    # The agent's fill counts in the server's metrics, as its own agents' fills do.
    assert (
        f'lakecache_cache_fill_duration_seconds_count{{outcome="ready",site="{site}",'
        f'volume="{site}"}} 1.0' in metrics
    )


def test_fill_steps_and_leases_are_checked_per_user(lake_world: LakeWorld, tmp_path: Path) -> None:
    site, _ = _site(lake_world, tmp_path, "authz")
    call = lake_world.call
    plane = lake_world.world.plane
    now = plane.clock.now()
    rec = plane.caches().request("xray", "v1", site=site, path="docs")
    base = f"/api/v1/caches/{rec.id}"

    assert call("nora", "POST", f"{base}/claim", json={"worker": "h:1"}).status_code == 404
    assert call("rita", "POST", f"{base}/claim", json={"worker": "h:1"}).status_code == 403
    # A reader's client does not fail on a cache it may not fill: it waits for a filler.
    rita_hub = Hub(lake_world.settings("rita", tmp_path / "r"))
    try:
        rita = CacheService(rita_hub).topology
        assert rita.claim_fill(rec.id, "h:1", now=now, stale_after=timedelta(seconds=60)) is None
    finally:
        rita_hub.close()

    claimed = call("wendy", "POST", f"{base}/claim", json={"worker": "h:1"})
    assert claimed.status_code == 200 and claimed.json()["done"] is True
    assert claimed.json()["cache"]["worker"] == "wendy/h:1"
    token = claimed.json()["token"]
    # Nobody takes over a live fill by calling it stale after a second.
    hasty = {"worker": "h:2", "stale_after_seconds": 1}
    assert call("alice", "POST", f"{base}/claim", json=hasty).status_code == 422
    again = call("alice", "POST", f"{base}/claim", json={"worker": "h:2"})
    assert again.status_code == 200 and again.json()["done"] is False  # one filler
    # Only the claimant reports on the fill (alice is the dataset's admin, not its filler).
    done = {"token": token, "linked_bytes": 0, "fetched_bytes": 1}
    assert call("alice", "POST", f"{base}/ready", json=done).status_code == 409
    beat = call("wendy", "POST", f"{base}/heartbeat", json={"token": token, "done_bytes": 5})
    assert beat.json()["done"] is True and beat.json()["cache"]["done_bytes"] == 5
    bad = call("wendy", "POST", f"{base}/ready", json={**done, "linked_bytes": -1})
    assert bad.status_code == 422
    ok = call("wendy", "POST", f"{base}/ready", json=done)
    assert ok.json()["done"] is True and ok.json()["cache"]["state"] == "ready"

    lease = call("rita", "POST", f"{base}/leases", json={"holder": "job-7", "ttl_seconds": 30})
    assert lease.status_code == 201 and lease.json()["holder"] == "rita/job-7"
    lid = lease.json()["id"]
    assert call("wendy", "PUT", f"/api/v1/leases/{lid}", json={}).status_code == 403
    assert call("wendy", "DELETE", f"/api/v1/leases/{lid}").status_code == 403
    assert call("nora", "DELETE", f"/api/v1/leases/{lid}").status_code == 404
    evict = call("wendy", "POST", f"{base}/eviction")
    assert evict.json()["done"] is False  # held by rita's lease
    assert call("rita", "PUT", f"/api/v1/leases/{lid}", json={"ttl_seconds": 60}).status_code == 200
    assert call("rita", "DELETE", f"/api/v1/leases/{lid}").status_code == 204
    assert call("rita", "DELETE", f"/api/v1/leases/{lid}").status_code == 404
    evicting = call("wendy", "POST", f"{base}/eviction").json()
    assert evicting["done"] is True
    held = call("rita", "POST", f"{base}/leases", json={"holder": "late"})
    assert held.status_code == 409 and "not ready" in held.json()["error"]["message"]
    evicted = call("wendy", "POST", f"{base}/evicted", json={"token": evicting["token"]})
    assert evicted.json()["cache"]["state"] == "evicted"

    # Work left for the agent is taken once, whoever races for it.
    ready = plane.caches().request("xray", "v1", site=site, path="images")
    token = plane.topology.claim_fill(ready.id, "x", now=now, stale_after=timedelta(seconds=60))
    assert token is not None
    assert plane.topology.complete_fill(
        ready.id, token=token, linked_bytes=0, fetched_bytes=0, now=now
    )
    asked = call("wendy", "POST", f"/api/v1/caches/{ready.id}/requests", json={"request": "verify"})
    assert asked.status_code == 202 and asked.json()["request"] == "verify"
    first = call("admin", "DELETE", f"/api/v1/caches/{ready.id}/requests/verify")
    second = call("admin", "DELETE", f"/api/v1/caches/{ready.id}/requests/verify")
    assert first.json()["done"] is True and second.json()["done"] is False


def test_cli_agent_fills_what_was_asked_where_the_volume_is_not_mounted(
    lake_world: LakeWorld, tmp_path: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    site = f"far-{uuid.uuid4().hex[:6]}"
    root = tmp_path / "far-mount"
    assert cli("admin", "site", "add", site)[0] == 0
    code, out = cli(
        "admin", "volume", "add", site, "--site", site, "--root", str(root), "-c", "1GB",
        "--no-create",
    )  # fmt: skip
    assert code == 0 and "not mounted on this machine" in out and not root.exists()
    # This machine does not mount it: the writer's request waits for the site's agent.
    code, out = cli("wendy", "cache", "add", "xray@v1", "--site", site)
    assert code == 0 and "pending" in out and "agent of site" in out and not root.exists()
    # At the site (here: once the mount appears), the agent fills it through the server.
    root.mkdir()
    code, out = cli("admin", "agent", "--site", site, "--once")
    assert code == 0, out
    (rec,) = lake_world.world.plane.topology.list_caches(volume=site)
    assert rec.state == "ready"
    assert tree(root / "caches" / "xray" / rec.commit_id) == _expected(lake_world, "v1", tmp_path)


def test_an_agent_user_works_its_sites_caches_and_nothing_else(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    site, root = _site(lake_world, tmp_path, "own")
    other_site, _ = _site(lake_world, tmp_path, "notmine")
    world, plane = lake_world.world, lake_world.world.plane
    now = plane.clock.now()
    name = f"agent-{site}"
    plane.accounts.create_user(name, "agent-password-1", agent_site=site, now=now)
    _, world.tokens[name] = plane.accounts.create_token(name, "site", now=now, expires_at=None)
    with pytest.raises(UserError, match="cannot be an org admin"):
        plane.accounts.update_user(name, org_admin=True)

    ask = {"ref": "v1", "site": site, "path": "images"}
    mine = lake_world.call("wendy", "POST", "/api/v1/datasets/xray/caches", json=ask).json()
    ask["site"] = other_site
    theirs = lake_world.call("wendy", "POST", "/api/v1/datasets/xray/caches", json=ask).json()

    hub = lake_world.hub(name, tmp_path / "agent-home")
    try:
        agent = SiteAgent(CacheService(hub), site, gc_every=3600)
        assert agent.run_once() == 1
        agent.wait_idle()
        assert agent.report_space() == 1 and not agent._space_refused
        agent.close()
    finally:
        hub.close()
    assert plane.topology.get_cache(mine["id"]).state == "ready"
    assert plane.topology.get_cache(theirs["id"]).state == "pending"  # not its site's
    assert (root / "caches" / "xray").is_dir()
    assert plane.topology.get_volume(site).fs_reported_at is not None

    call = lake_world.call
    listed = call(name, "GET", "/api/v1/caches").json()["items"]
    assert {c["id"] for c in listed} == {mine["id"]}
    assert call(name, "GET", f"/api/v1/caches/{theirs['id']}").status_code == 404
    claim = {"worker": "h:1"}
    assert call(name, "POST", f"/api/v1/caches/{theirs['id']}/claim", json=claim).status_code == 404
    # It reads what its site caches, and writes nothing.
    assert call(name, "GET", "/api/v1/datasets/xray").status_code == 200
    assert call(name, "GET", "/api/v1/datasets/hidden").status_code == 404
    assert call(name, "POST", "/api/v1/datasets/xray/caches", json=ask).status_code == 403
    assert (
        call(name, "PATCH", f"/api/v1/caches/{mine['id']}", json={"pinned": True}).status_code
        == 403
    )
    assert call(name, "GET", "/api/v1/users").status_code == 403
    space = {"free_bytes": 1, "total_bytes": 2}
    assert call(name, "PUT", f"/api/v1/volumes/{other_site}/space", json=space).status_code == 403
    put = {
        "datasets": ["xray"],
        "items": [{"method": "PUT", "key": "commits/" + "0" * 64 + ".json", "size": 1}],
    }
    assert call(name, "POST", "/api/v1/lake/presign", json=put).status_code == 403
    # Once its site holds no cache of xray, the agent user cannot read xray either.
    assert call("wendy", "DELETE", f"/api/v1/caches/{mine['id']}").status_code == 202
    hub = lake_world.hub(name, tmp_path / "agent-home")
    try:
        again = SiteAgent(CacheService(hub), site, gc_every=3600)
        again.run_once()
        again.close()
    finally:
        hub.close()
    assert plane.topology.get_cache(mine["id"]).state == "evicted"
    assert call(name, "GET", "/api/v1/datasets/xray").status_code == 404
