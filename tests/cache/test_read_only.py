"""Published caches are read-only; link sources are checked; removal and repair still work.

Tests run as root, and root ignores 0444 for writes: so the modes are
checked themselves, and writes are tried for real by a process that is not
root (``nobody``), as a job on a shared cache volume would be.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import make_files, tree, write

from lakecache.cache.clock import ManualClock
from lakecache.cache.seal import seal_record
from lakecache.cache.service import CacheService
from lakecache.cache.volume import VolumeLayout
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings

DAY = 86400
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")


def modes(root: Path) -> tuple[set[int], set[int]]:
    """The permission bits of every file, and of every folder (the root included)."""
    files: set[int] = set()
    folders = {stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        (folders if p.is_dir() else files).add(stat.S_IMODE(p.lstat().st_mode))
    return files, folders


def run_as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """A real process that is not root, as a job on a shared volume would be."""
    return subprocess.run(
        argv, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder that ``nobody`` may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="lakecache-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)  # root removes 0555 folders too


@pytest.fixture
def onprem(svc: CacheService, clock: ManualClock, world: Path) -> Path:
    root = world / "vol-onprem"
    root.mkdir()
    svc.topology.add_site("onprem", "on-prem", clock.now())
    svc.topology.add_volume("onprem-vol", "onprem", str(root), 10**9, DAY, clock.now())
    return root


def test_a_published_cache_is_read_only_and_sealed(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    tool = write(src, "bin/tool.sh", b"#!/bin/sh\necho hi\n", age=10)
    tool.chmod(0o755)
    xray.commit(src, message="with a tool")
    rec = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    root = svc.cache_path(rec)
    files, folders = modes(root)
    assert files == {0o444, 0o555}  # executables keep their x bits, nobody has w
    assert folders == {0o555}
    assert stat.S_IMODE((root / "bin" / "tool.sh").stat().st_mode) == 0o555
    record = seal_record(VolumeLayout(onprem), rec.id)
    assert record.is_file()
    newest = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file())
    assert newest <= record.stat().st_mtime_ns


@as_root
def test_a_job_that_is_not_root_cannot_change_a_cache(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    write(tmp_path / "src", "Mass/00001.png", b"relabelled", age=5)
    xray.commit(tmp_path / "src", message="v2")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    shared = svc.cache_path(second) / "Edema" / "00000.png"
    source = svc.cache_path(first) / "Edema" / "00000.png"
    assert shared.stat().st_ino == source.stat().st_ino  # one inode, two caches
    before = shared.read_bytes()
    # The job runs as the user that owns the volume (an agent and its jobs often share
    # a service account): only the modes stand between it and the shared inode.
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(onprem)], check=True)

    read = run_as_nobody("sh", "-c", 'cat "$1" > /dev/null', "sh", str(shared))
    assert read.returncode == 0  # the job reaches and reads the file: the mode is what stops it
    write_in = run_as_nobody("sh", "-c", 'printf tampered > "$1"', "sh", str(shared))
    assert write_in.returncode != 0 and "Permission denied" in write_in.stderr
    add = run_as_nobody("sh", "-c", 'printf new > "$1"', "sh", str(shared.parent / "new.png"))
    assert add.returncode != 0 and "Permission denied" in add.stderr
    remove = run_as_nobody("rm", "-f", str(shared))
    assert remove.returncode != 0
    assert shared.read_bytes() == before == source.read_bytes()
    assert not (shared.parent / "new.png").exists()


def test_a_tampered_link_source_is_downloaded_not_linked(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    tampered = svc.cache_path(first) / "Hernia" / "00002.png"
    original = tampered.read_bytes()
    # Past the seal record's timestamp tick (ext4 stamps at jiffy granularity).
    time.sleep(0.05)
    # What root (or a job before caches were read-only) can do: same size, other bytes,
    # and the mode put back, so that only its mtime tells.
    tampered.chmod(0o644)
    tampered.write_bytes(b"X" * len(original))
    tampered.chmod(0o444)

    write(tmp_path / "src", "Mass/00001.png", b"relabelled", age=5)
    xray.commit(tmp_path / "src", message="v2")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    got = svc.cache_path(second) / "Hernia" / "00002.png"
    assert got.read_bytes() == original
    assert got.stat().st_ino != tampered.stat().st_ino
    linked = svc.cache_path(second) / "Edema" / "00000.png"
    assert linked.stat().st_ino == (svc.cache_path(first) / "Edema" / "00000.png").stat().st_ino
    assert second.fetched_bytes >= len(original)
    assert svc.verify(second.id).ok


def test_a_source_without_a_seal_is_hashed_then_linked_and_made_read_only(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    """A cache from before seals (writable files, no record) still lends its files, once read."""
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    old = svc.cache_path(first)
    seal_record(VolumeLayout(onprem), first.id).unlink()
    for p in old.rglob("*.png"):
        p.chmod(0o644)
    write(tmp_path / "src", "Mass/00001.png", b"relabelled", age=5)
    xray.commit(tmp_path / "src", message="v2")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    assert second.linked_bytes == second.bytes - len(b"relabelled")
    source = old / "Edema" / "00000.png"
    assert (svc.cache_path(second) / "Edema" / "00000.png").stat().st_ino == source.stat().st_ino
    assert stat.S_IMODE(source.stat().st_mode) == 0o444  # the shared inode is sealed now


def test_repair_replaces_a_damaged_file_and_seals_again(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    root = svc.cache_path(rec)
    record = seal_record(VolumeLayout(onprem), rec.id)
    sealed = record.stat().st_mtime_ns
    (root / "Mass" / "00001.png").chmod(0o644)
    (root / "Mass" / "00001.png").write_bytes(b"tampered")
    (root / "Edema" / "00000.png").unlink()
    time.sleep(0.05)
    fixed = svc.verify(rec.id, repair=True)
    assert fixed.repaired == 2
    assert tree(root) == tree(tmp_path / "src")
    assert modes(root) == ({0o444}, {0o555})
    assert record.stat().st_mtime_ns > sealed  # repaired files are covered by the seal


def test_evict_removes_a_sealed_cache(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    root = svc.cache_path(rec)
    assert modes(root)[1] == {0o555}
    assert svc.evict(rec.id)
    assert not root.exists()
    assert not seal_record(VolumeLayout(onprem), rec.id).exists()
    assert not any((onprem / ".lakecache" / "trash").iterdir())


def _as_nobody_in_a_fork(body: Callable[[], object], out: Path) -> object:
    """Run ``body`` in a forked child that became ``nobody``; return what it returned (JSON).

    A fork, not a new interpreter: this Python lives under /root, which
    ``nobody`` may not read; the child has every module it needs already.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out.write_text(json.dumps({"ok": body()}))
            code = 0
        except BaseException:  # noqa: BLE001 - the parent reads it from the file
            out.write_text(json.dumps({"error": traceback.format_exc()}))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    result = json.loads(out.read_text())
    assert os.waitstatus_to_exitcode(status) == 0, result.get("error")
    return result["ok"]


@as_root
def test_an_agent_that_is_not_root_fills_repairs_and_evicts_sealed_caches(world: Path) -> None:
    settings = Settings(home=world / "home", workers=2, author="tester")
    make_files(world / "src", n=12, size=3000)

    def service(h: Hub) -> CacheService:
        return CacheService(h, clock=ManualClock(), poll_every=0.02)

    hub = Hub(settings)
    try:
        ds = Dataset.create("xray", hub=hub)
        ds.commit(world / "src", message="v1")
        svc = service(hub)
        now = svc.clock.now()
        svc.topology.add_site("onprem", "on-prem", now)
        for name in ("warm", "vol"):
            (world / name).mkdir()
            svc.topology.add_volume(name, "onprem", str(world / name), 10**9, DAY, now)
        # The same work once as root first, so that every module the child needs is loaded.
        warm = svc.ensure_ready(svc.request("xray", None, volume="warm"))
        (svc.cache_path(warm) / "Mass" / "00001.png").write_bytes(b"x")
        svc.verify(warm.id, repair=True)
        svc.evict(warm.id)
    finally:
        hub.close()
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(world)], check=True)

    def fill() -> str:
        h = Hub(settings)
        try:
            s = service(h)
            return str(s.cache_path(s.ensure_ready(s.request("xray", None, volume="vol"))))
        finally:
            h.close()

    root = Path(str(_as_nobody_in_a_fork(fill, world / "fill.json")))
    assert root.stat().st_uid == NOBODY
    assert modes(root) == ({0o444}, {0o555})
    # Damage it as root can (nobody cannot), then let nobody's agent repair it.
    (root / "Mass" / "00001.png").chmod(0o644)
    (root / "Mass" / "00001.png").write_bytes(b"tampered")

    def repair_then_evict() -> list[int]:
        h = Hub(settings)
        try:
            s = service(h)
            rec = next(c for c in s.topology.list_caches() if c.volume == "vol")
            repaired = s.verify(rec.id, repair=True).repaired
            ok = s.verify(rec.id).ok
            evicted = s.evict(rec.id)
            return [repaired, int(ok), int(evicted)]
        finally:
            h.close()

    assert _as_nobody_in_a_fork(repair_then_evict, world / "evict.json") == [1, 1, 1]
    assert not root.exists()
    trash = world / "vol" / ".lakecache" / "trash"
    assert not trash.exists() or not any(trash.iterdir())


def test_a_pull_into_a_folder_stays_writable(
    svc: CacheService, onprem: Path, xray: Dataset, tmp_path: Path
) -> None:
    """A user's folder is not a cache: pulled files stay theirs to edit, even with a cache there."""
    svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    dest = tmp_path / "mine"
    xray.pull("v1", dest)
    files, folders = modes(dest)
    assert all(m & 0o200 for m in files) and all(m & 0o200 for m in folders)
    (dest / "Mass" / "00001.png").write_bytes(b"my label")
