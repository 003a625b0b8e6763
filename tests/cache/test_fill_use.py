"""Fill, publish, use with a lease, hard links, concurrency, verify and repair."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import tree, write

from lakecache.cache.clock import ManualClock
from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.lake.local import LocalLake


def test_fill_publishes_whole_commit_and_use_leases_it(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path, clock: ManualClock
) -> None:
    rec = svc.request("xray", "v1", site="onprem")
    assert rec.state == "pending" and rec.volume == "onprem-vol"
    final = svc.cache_path(rec)
    assert not final.exists()
    rec = svc.ensure_ready(rec)
    assert rec.state == "ready" and rec.fetched_bytes >= rec.bytes
    assert tree(final) == tree(tmp_path / "src")
    assert str(final).startswith(str(sites["onprem"]))
    assert not (sites["onprem"] / ".lakecache" / "staging" / str(rec.id)).exists()

    clock.advance(timedelta(hours=3))
    with svc.use("xray", "v1", site="onprem") as p:
        assert p == final
        held = svc.topology.get_cache(rec.id, clock.now())
        assert held.leases == 1 and held.last_used_at == clock.now()
        assert svc.evict(rec.id) is False  # a leased cache is never evicted
        assert p.exists()
    assert svc.topology.get_cache(rec.id, clock.now()).leases == 0


def test_use_fills_when_missing_and_request_is_idempotent(
    svc: CacheService, sites: dict[str, Path], xray: Dataset
) -> None:
    with svc.use("xray", None, site="cloud") as p:
        assert (p / "Edema" / "00000.png").is_file()
    again = svc.request("xray", "v1", site="cloud")
    assert again.state == "ready"
    assert len(svc.topology.list_caches()) == 1


def test_sdk_use_cached_and_uncached(hub: Hub, sites: dict[str, Path], xray: Dataset) -> None:
    import lakecache
    from lakecache.catalog.topology import Topology

    with lakecache.use("xray@v1", site="onprem", hub=hub) as p:
        assert str(p).startswith(str(sites["onprem"]))
        n = len(list(p.rglob("*.png")))
    with lakecache.use("xray@v1", cached=False, hub=hub) as q:
        assert len(list(q.rglob("*.png"))) == n
        assert not str(q).startswith(str(sites["onprem"]))
    assert not q.exists()
    assert len(Topology(hub.catalog).list_caches()) == 1


def test_eight_concurrent_uses_make_one_fill(
    cache_settings: object,
    svc: CacheService,
    sites: dict[str, Path],
    xray: Dataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched = {"bytes": 0}
    lock = threading.Lock()
    real_get = LocalLake.get

    def counting_get(self: LocalLake, key: str, start: int = 0, length: int | None = None) -> bytes:
        data = real_get(self, key, start, length)
        if key.startswith("packs/"):
            with lock:
                fetched["bytes"] += len(data)
        return data

    real_get_into = LocalLake.get_into

    def counting_get_into(self: LocalLake, key: str, start: int, buf: memoryview) -> None:
        real_get_into(self, key, start, buf)
        if key.startswith("packs/"):
            with lock:
                fetched["bytes"] += len(buf)

    monkeypatch.setattr(LocalLake, "get", counting_get)
    monkeypatch.setattr(LocalLake, "get_into", counting_get_into)
    paths: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        h = Hub(svc.hub.settings)
        try:
            s = CacheService(h, clock=svc.clock, poll_every=0.02)
            barrier.wait(timeout=30)
            with s.use("xray", "v1", site="onprem") as p:
                paths.append(p)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            h.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(paths)) == 1 and len(paths) == 8
    size = xray.get_commit("v1").bytes
    assert size <= fetched["bytes"] <= size * 1.05, (fetched, size)


def test_shared_files_are_hard_linked(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    src = tmp_path / "src"
    write(src, "Mass/00001.png", b"relabelled", age=5)
    xray.commit(src, message="v2")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    assert second.linked_bytes == second.bytes - len(b"relabelled")
    assert second.fetched_bytes < 1024 * 1024  # one small range, not the commit
    a = svc.cache_path(first) / "Edema" / "00000.png"
    b = svc.cache_path(second) / "Edema" / "00000.png"
    assert os.stat(a).st_ino == os.stat(b).st_ino
    assert (svc.cache_path(second) / "Mass" / "00001.png").read_bytes() == b"relabelled"
    usage = svc.usage(svc.topology.get_volume("onprem-vol"))
    assert usage.committed == first.bytes + len(b"relabelled")
    assert usage.linked_saved == second.linked_bytes


def test_sub_path_cache(svc: CacheService, sites: dict[str, Path], xray: Dataset) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem", path="Hernia/"))
    root = svc.cache_path(rec)
    assert sorted(p.name for p in root.iterdir()) == ["Hernia"]
    assert rec.files == 20


def test_verify_finds_edits_and_repair_restores(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    root = svc.cache_path(rec)
    (root / "Edema" / "00000.png").unlink()
    with open(root / "Mass" / "00001.png", "r+b") as f:
        f.write(b"tampered")
    report = svc.verify(rec.id)
    assert report.missing == ["Edema/00000.png"] and report.modified == ["Mass/00001.png"]
    fixed = svc.verify(rec.id, repair=True)
    assert fixed.repaired == 2
    assert svc.verify(rec.id).ok
    assert tree(root) == tree(tmp_path / "src")


@pytest.mark.s3
def test_fill_from_a_real_s3_lake(s3_settings: object, tmp_path: Path) -> None:
    from helpers import make_files

    from lakecache.settings import Settings

    assert isinstance(s3_settings, Settings)
    hub = Hub(s3_settings)
    try:
        ds = Dataset.create("xray", hub=hub)
        ds.commit(make_files(tmp_path / "src", n=90), message="v1")
        svc = CacheService(hub, poll_every=0.02)
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        svc.topology.add_site("onprem", "", now)
        svc.topology.add_volume("nfs", "onprem", str(tmp_path / "nfs"), 10**9, 86400, now)
        (tmp_path / "nfs").mkdir()
        with svc.use("xray", None, site="onprem") as p:
            assert tree(p) == tree(tmp_path / "src")
        rec = svc.topology.list_caches()[0]
        assert rec.state == "ready" and rec.bytes <= rec.fetched_bytes <= rec.bytes * 1.05
    finally:
        hub.close()
