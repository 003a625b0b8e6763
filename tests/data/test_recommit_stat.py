"""Re-commits trust the stat cache only when nothing could have changed, and ask little."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from helpers import make_files, write

import lakecache.data.commit as commit_module
from lakecache.data.dataset import Dataset
from lakecache.data.scan import SourceFile
from lakecache.lake.objects import hash_bytes


@pytest.mark.parametrize("how", ["in place", "replaced by rename"])
@pytest.mark.parametrize("age", [10.0, 0.0], ids=["old file", "racy file"])
def test_a_file_rewritten_with_its_size_and_mtime_kept_is_read_again(
    ds: Dataset, tmp_path: Path, how: str, age: float
) -> None:
    src = make_files(tmp_path / "src", n=6, size=1000)
    target = write(src, "Mass/same.bin", b"A" * 4096, age=age)
    ds.commit(src, message="one")
    before = target.stat()

    new = b"B" * 4096  # same size
    if how == "in place":
        with open(target, "r+b") as f:  # same inode
            f.write(new)
    else:
        tmp = target.with_name(".same.tmp")
        tmp.write_bytes(new)
        os.replace(tmp, target)
    # Put the mtime back to the nanosecond: only the ctime (and maybe the inode) moved.
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    ds.commit(src, message="two")

    s = ds.last_commit_stats
    assert s is not None and s.created
    assert s.hashed_files == 1
    assert len(ds.log()) == 2
    assert ds.ls("latest", "Mass/same.bin")[0].digest == hash_bytes(new)


def test_unchanged_files_cost_a_stat_no_read_and_no_catalog_question(
    ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_files(tmp_path / "src", n=60)
    ds.commit(src, message="one")
    write(src, "Edema/00000.png", b"changed", age=5)
    write(src, "Hernia/added.png", b"added", age=5)
    new_digests = {hash_bytes(b"changed"), hash_bytes(b"added")}

    read: list[str] = []
    real_read = commit_module.read_stable

    def counting_read(f: SourceFile) -> tuple[SourceFile, bytes]:
        read.append(f.path)
        return real_read(f)

    asked: list[set[str]] = []
    catalog = ds.hub.catalog
    real_known = catalog.known_blobs

    def counting_known(digests: Iterable[str]) -> set[str]:
        batch = set(digests)
        asked.append(batch)
        return real_known(batch)

    monkeypatch.setattr(commit_module, "read_stable", counting_read)
    monkeypatch.setattr(catalog, "known_blobs", counting_known)

    ds.commit(src, message="two")

    assert sorted(read) == ["Edema/00000.png", "Hernia/added.png"]
    # The parent holds the 59 unchanged files at the same paths: none is asked about.
    assert set().union(*asked) <= new_digests
    assert len(asked) <= 2  # one question per batch of files read, never one per file
    s = ds.last_commit_stats
    assert s is not None and s.files == 61 and s.hashed_files == 2
