"""A commit that shares most files with a cache on the volume: links, seals, and without it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from helpers import tree, write

from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset


def _second_commit(xray: Dataset, src: Path) -> None:
    write(src, "Mass/00001.png", b"relabelled", age=5)
    write(src, "Mass/new/deeper/00100.png", b"a new file, two folders down", age=5)
    xray.commit(src, message="v2")


def test_a_shared_commit_fills_after_the_first_cache_was_evicted(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    first_path = svc.cache_path(first)
    assert svc.evict(first.id) is True
    assert not first_path.exists()
    _second_commit(xray, tmp_path / "src")

    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))

    assert second.state == "ready"
    assert second.linked_bytes == 0  # nothing left on the volume to link from
    assert second.fetched_bytes >= second.bytes
    assert tree(svc.cache_path(second)) == tree(tmp_path / "src")


def test_the_linked_fill_seals_every_folder_of_the_new_commit(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    _second_commit(xray, tmp_path / "src")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    root = svc.cache_path(second)

    assert second.linked_bytes > 0
    assert tree(root) == tree(tmp_path / "src")
    folders = [Path(d) for d, _, _ in os.walk(root)]
    # The root, the three label folders and the two new ones under Mass/.
    assert len(folders) == 6
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o555, folder
    for name in ("Edema/00000.png", "Mass/new/deeper/00100.png"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o444, name
    shared = "Edema/00000.png"
    assert (root / shared).stat().st_ino == (svc.cache_path(first) / shared).stat().st_ino


def test_repairing_a_linked_file_replaces_it_never_writes_through_the_shared_inode(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, tmp_path: Path
) -> None:
    first = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    _second_commit(xray, tmp_path / "src")
    second = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    shared = "Edema/00000.png"
    a, b = svc.cache_path(first) / shared, svc.cache_path(second) / shared
    inode = a.stat().st_ino
    assert b.stat().st_ino == inode
    good = a.read_bytes()
    # Damage the shared inode in place (root can, whatever the modes): both caches see it.
    os.chmod(a, 0o644)
    with open(a, "r+b") as f:
        f.write(b"\0" * 16)
    os.chmod(a, 0o444)
    assert b.read_bytes() != good

    report = svc.verify(first.id, repair=True)

    assert shared in report.modified
    assert a.read_bytes() == good
    # A new inode under the first cache's name: the damaged one was not written through,
    # so the second cache still holds it until its own repair.
    assert a.stat().st_ino != inode
    assert b.stat().st_ino == inode and b.read_bytes() != good
    assert shared in svc.verify(second.id, repair=True).modified
    assert b.read_bytes() == good
