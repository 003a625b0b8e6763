"""Faults during fills: kill -9, a volume that fills up, the lake going away, hostile manifests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import tree

from lakecache.cache.agent import SiteAgent
from lakecache.cache.service import CacheFillError, CacheService
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import InvalidPathError
from lakecache.settings import Settings

_FILL_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import lakecache.data.materialize as m
    from lakecache.data.hub import Hub
    from lakecache.cache.service import CacheService
    from lakecache.settings import Settings
    m.RANGE_MAX = 64 * 1024
    cfg = json.loads(sys.argv[1])
    hub = Hub(Settings(home=Path(cfg["home"]), catalog_url=cfg["catalog_url"], workers=2))
    lake = hub.lake
    real_get = lake.get
    def slow_get(key, start=0, length=None):
        time.sleep(0.15)  # slow enough for the test to kill us midway
        return real_get(key, start, length)
    lake.get = slow_get
    real_get_into = lake.get_into
    def slow_get_into(key, start, buf):
        time.sleep(0.15)
        real_get_into(key, start, buf)
    lake.get_into = slow_get_into
    svc = CacheService(hub, heartbeat_every=0.2)
    rec = svc.request("xray", "v1", volume="onprem-vol")
    svc.ensure_ready(rec)
    print("FINISHED")
    """
)


def test_fill_killed_resumes_without_refetching_and_is_never_half_visible(
    hub: Hub, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    s = hub.settings
    cfg = json.dumps({"home": str(s.home), "catalog_url": s.catalog_url})
    proc = subprocess.Popen([sys.executable, "-c", _FILL_CHILD, cfg], stdout=subprocess.PIPE)
    staging_root = sites["onprem"] / ".lakecache" / "staging"
    deadline = time.monotonic() + 60
    svc = CacheService(hub, stale_after=timedelta(seconds=1), poll_every=0.05)
    final = None
    while time.monotonic() < deadline:
        pngs = list(staging_root.rglob("*.png")) if staging_root.exists() else []
        if len(pngs) >= 12:
            break
        time.sleep(0.02)
    caches = svc.topology.list_caches()
    assert caches and caches[0].state == "filling"
    final = svc.cache_path(caches[0])
    assert not final.exists(), "a reader could see a partial cache"
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert b"FINISHED" not in out
    assert svc.topology.get_cache(caches[0].id).state == "filling"  # claimed by a dead worker

    time.sleep(1.2)  # its heartbeat is now stale
    rec = svc.ensure_ready(svc.topology.get_cache(caches[0].id))
    assert rec.state == "ready"
    assert rec.fetched_bytes < rec.bytes - 10 * 20_000, "verified files were downloaded again"
    assert tree(final) == tree(tmp_path / "src")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Path:
    """A real 600 KiB filesystem, so writes fail with ENOSPC for real."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_volume_full_midway_fails_cleanly(
    svc: CacheService,
    xray: Dataset,
    tiny_tmpfs: Path,
    clock: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topo = svc.topology
    now = datetime.now(UTC)
    topo.add_site("edge", "", now)
    topo.add_volume("edge-vol", "edge", str(tiny_tmpfs), 10**10, 86400, now)
    # The volume is shared with others (thin-provisioned): when the fill starts the
    # filesystem says there is room; it runs out midway. The ENOSPC itself is real.
    monkeypatch.setattr("lakecache.cache.service.volume_free_bytes", lambda root: 10**12)
    with pytest.raises(CacheFillError, match="volume full|No space"):
        svc.ensure_ready(svc.request("xray", "v1", site="edge"))
    rec = topo.list_caches(volume="edge-vol")[0]
    assert rec.state == "failed" and "volume full" in (rec.error or "")
    assert not (tiny_tmpfs / ".lakecache" / "staging" / str(rec.id)).exists()
    assert not (tiny_tmpfs / "caches" / "xray").exists() or not any(
        (tiny_tmpfs / "caches" / "xray").iterdir()
    )
    assert svc.usage(topo.get_volume("edge-vol")).committed == 0


def test_hostile_manifest_never_escapes_the_volume(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    import msgpack
    import zstandard

    from lakecache.lake.objects import Commit, hash_bytes, manifest_key

    good = xray.files("v1")[0]
    body = msgpack.packb({"format": "lakecache-manifest/1", "count": 1}) + msgpack.packb(
        ("../../../escaped.png", bytes.fromhex(good.digest), good.size, 0o644), use_bin_type=True
    )
    raw = zstandard.ZstdCompressor().compress(body)
    svc.hub.lake.put(manifest_key(hash_bytes(raw)), raw)
    head = svc.hub.catalog.head("xray")
    evil = Commit(
        "xray", hash_bytes(raw), (head,), "x", "evil", "2026-01-02T00:00:00+00:00", 1, good.size
    )
    svc.hub.catalog.add_commit(evil, expected_head=head)
    with pytest.raises(CacheFillError, match=r"'\.\.'") as err:
        svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    assert isinstance(err.value.__cause__, InvalidPathError)
    assert not list(tmp_path.rglob("escaped.png"))


def test_agent_fills_only_its_site_and_serves_requests(
    svc: CacheService, sites: dict[str, Path], xray: Dataset
) -> None:
    on = svc.request("xray", "v1", site="onprem")
    cl = svc.request("xray", "v1", site="cloud")
    agent = SiteAgent(svc, "cloud", max_fills=2, gc_every=3600)
    assert agent.run_once() == 1
    agent.wait_idle()
    assert svc.topology.get_cache(cl.id).state == "ready"
    assert svc.topology.get_cache(on.id).state == "pending"
    svc.topology.update_cache(cl.id, request="evict")
    agent.run_once()
    assert svc.topology.get_cache(cl.id).state == "evicted"
    agent.close()


@pytest.mark.s3
def test_lake_down_midway_fails_with_reason_then_retry_completes(
    s3_settings: Settings, seaweed: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import make_files

    import lakecache.data.materialize as m

    monkeypatch.setattr(m, "RANGE_MAX", 64 * 1024)
    hub = Hub(s3_settings.with_(lake_retries=2, lake_timeout=3.0))
    try:
        ds = Dataset.create("xray", hub=hub)
        ds.commit(make_files(tmp_path / "src"), message="v1")
        svc = CacheService(hub, poll_every=0.05)
        now = datetime.now(UTC)
        svc.topology.add_site("onprem", "", now)
        svc.topology.add_volume("nfs", "onprem", str(tmp_path / "nfs"), 10**9, 86400, now)
        (tmp_path / "nfs").mkdir()
        lake = hub.lake
        real_get = lake.get
        calls = {"n": 0}

        def get(key: str, start: int = 0, length: int | None = None) -> bytes:
            calls["n"] += 1
            if calls["n"] == 3:
                seaweed.stop()  # type: ignore[attr-defined]
            return real_get(key, start, length)

        real_get_into = lake.get_into

        def get_into(key: str, start: int, buf: memoryview) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                seaweed.stop()  # type: ignore[attr-defined]
            real_get_into(key, start, buf)

        monkeypatch.setattr(lake, "get", get)
        monkeypatch.setattr(lake, "get_into", get_into)
        with pytest.raises(CacheFillError) as err:
            svc.ensure_ready(svc.request("xray", None, site="onprem"))
        rec = svc.topology.list_caches()[0]
        assert rec.state == "failed"
        assert seaweed.endpoint.split("//")[1] in (rec.error or ""), rec.error  # type: ignore[attr-defined]
        # Depending on which part of SeaweedFS goes first, the gateway refuses
        # connections or answers 500 until it is gone; either way, after retries.
        assert seaweed.endpoint.split("//")[1] in err.value.message  # type: ignore[attr-defined]
        seaweed.start()  # type: ignore[attr-defined]
        monkeypatch.setattr(lake, "get", real_get)
        monkeypatch.setattr(lake, "get_into", real_get_into)
        done = svc.ensure_ready(svc.request("xray", None, site="onprem"))
        assert done.state == "ready"
        assert tree(svc.cache_path(done)) == tree(tmp_path / "src")
    finally:
        seaweed.start()  # type: ignore[attr-defined]
        hub.close()
