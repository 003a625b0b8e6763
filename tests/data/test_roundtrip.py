"""Commit a folder and pull it back, on a local lake and a real S3 lake."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_files, tree, write

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import AlreadyExistsError, NotFoundError, UserError
from lakecache.lake.objects import hash_bytes
from lakecache.settings import Settings


def make_source(root: Path, n: int = 40, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i in range(n):
        cls = ["Atelectasis", "No_Finding", "Pneumonia"][i % 3]
        files[f"{cls}/{i:05d}.png"] = rng.randbytes(rng.randint(1, 50_000))
    files["unicodé ✓/naïve file.txt"] = b"unicode"
    files["with space/a b.txt"] = b"spaces"
    files["newline\nname.txt"] = b"newline"
    files["empty.txt"] = b""
    files["dup1.bin"] = b"same bytes"
    files["deep/er/dup2.bin"] = b"same bytes"
    files["large.bin"] = rng.randbytes(6 << 20)  # above the pack threshold: stored alone
    for rel, data in files.items():
        write(root, rel, data, age=10)
    return files


def test_commit_and_pull_round_trip(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_source(src)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    files["run.sh"] = b"#!/bin/sh\necho hi\n"

    c = ds.commit(src, message="first import")
    assert c.file_count == len(files)
    assert c.bytes == sum(len(v) for v in files.values())
    stats = ds.last_commit_stats
    assert stats is not None and stats.packs >= 1
    # The duplicate pair is uploaded once.
    assert stats.uploaded_blobs == len({hash_bytes(v) for v in files.values()})

    out = tmp_path / "out"
    ps = ds.pull("latest", out)
    assert ps.files == len(files)
    assert tree(out) == files
    assert os.stat(out / "run.sh").st_mode & 0o111
    assert not any(".lakecache-tmp" in p.name for p in out.rglob("*"))


def test_pull_sub_paths_and_resume(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_source(src)
    ds.commit(src, message="m")
    out = tmp_path / "out"
    ds.pull(None, out, paths=["Pneumonia/", "empty.txt"])
    got = tree(out)
    assert set(got) == {k for k in files if k.startswith("Pneumonia/")} | {"empty.txt"}
    # Resume: a second pull keeps what is there and verified.
    again = ds.pull(None, out, paths=["Pneumonia"])
    assert again.skipped_files == again.files
    with pytest.raises(NotFoundError, match="no-such"):
        ds.pull(None, out, paths=["no-such"])


def test_empty_dataset_commits_and_pulls(ds: Dataset, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    c = ds.commit(tmp_path / "empty", message="nothing yet")
    assert (c.file_count, c.bytes) == (0, 0)
    assert ds.ls(None, "") == []
    ds.pull(None, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_ls_diff_log_tags(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_source(src)
    v1 = ds.commit(src, message="v1")
    ds.tag("v1")
    write(src, "Pneumonia/00002.png", b"relabelled", age=5)
    (src / "empty.txt").unlink()
    write(src, "Pneumonia/new.png", b"new file", age=5)
    v2 = ds.commit(src, message="fix labels")

    root = {i.name: i for i in ds.ls("latest", "")}
    assert root["Pneumonia"].is_dir
    assert root["Pneumonia"].files == sum(1 for k in files if k.startswith("Pneumonia/")) + 1
    names = [i.name for i in ds.ls("v1", "Pneumonia")]
    assert names == sorted(names) and "new.png" not in names

    d = ds.diff("v1", "latest")
    assert d.counts == {"added": 1, "removed": 1, "modified": 1}
    by_path = {c.path: c.status for c in d.changes}
    assert by_path == {
        "Pneumonia/new.png": "added",
        "empty.txt": "removed",
        "Pneumonia/00002.png": "modified",
    }
    assert d.bytes_added == len(b"relabelled") + len(b"new file")

    log = ds.log()
    assert [e.id for e in log] == [v2.id, v1.id]
    assert log[1].tags == ("v1",)
    assert log[0].commit.parents == (v1.id,)
    assert ds.resolve(v1.id[:8]) == v1.id
    with pytest.raises(AlreadyExistsError):
        ds.tag("v1", "latest")
    ds.tag("v1", "latest", force=True)
    assert ds.resolve("v1") == v2.id


def test_ls_in_pages_is_the_whole_listing(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(23):
        write(src, f"big/f{i:03d}.bin", b"x" * i, age=10)
    for sub in ("a", "b", "c"):
        write(src, f"big/{sub}/inner.bin", b"inner", age=10)
    ds.commit(src, message="one folder of many")
    whole = ds.ls("latest", "big")
    assert [i.name for i in whole[:3]] == ["a", "b", "c"] and len(whole) == 26
    pages, after = [], None
    while page := ds.ls("latest", "big", limit=7, after=after):
        assert len(page) <= 7
        pages.append(page)
        after = page[-1].path
    assert [i for p in pages for i in p] == whole and len(pages) == 4
    # A page that starts after a folder goes on with the next folder, then the files.
    assert [i.name for i in ds.ls("latest", "big", limit=2, after="big/b")] == ["c", "f000.bin"]
    assert ds.ls("latest", "", limit=5) == ds.ls("latest", "")
    with pytest.raises(UserError, match="not an item of folder"):
        ds.ls("latest", "big", limit=2, after="other/f000.bin")
    with pytest.raises(UserError, match="at least 1"):
        ds.ls("latest", "big", limit=0)


def test_dedup_across_datasets(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_source(src)
    ds.commit(src, message="a")
    other = Dataset.create("xray-copy", hub=ds.hub)
    other.commit(src, message="same files")
    s = other.last_commit_stats
    assert s is not None and s.uploaded_bytes == 0 and s.packs == 0


def test_recommit_reads_only_changed_files(ds: Dataset, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_source(src, n=60)
    ds.commit(src, message="a")
    write(src, "Pneumonia/00002.png", b"changed", age=5)
    write(src, "added.png", b"added", age=5)
    ds.commit(src, message="b")
    s = ds.last_commit_stats
    assert s is not None
    assert s.hashed_files == 2
    assert s.uploaded_blobs == 2


def test_reads_of_an_indexed_commit_never_open_the_lake(
    s3_settings: Settings, tmp_path: Path
) -> None:
    """ls, diff and log of commits indexed here need the catalog only: no S3 client
    (boto3 costs ~100 ms to load in a fresh process)."""
    hub = Hub(s3_settings)
    try:
        ds = Dataset.create("quick", hub=hub)
        src = make_files(tmp_path / "src", n=12)
        ds.commit(src, "one")
        write(src, "Edema/extra.png", b"more", age=5)
        ds.commit(src, "two")
        ds.ls()  # builds the local index of each commit once
        ds.diff(ds.log()[-1].id)
    finally:
        hub.close()
    code = (
        "import sys, json; from lakecache import Dataset, Settings;"
        f"s = Settings(**json.loads({json.dumps(_plain(s3_settings))!r}));"
        "d = Dataset('quick', settings=s);"
        "assert [i.name for i in d.ls()] == ['Edema', 'Hernia', 'Mass'], d.ls();"
        "assert d.diff(d.log()[-1].id).counts['added'] == 1;"
        "assert 'boto3' not in sys.modules, 'the S3 client was loaded'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def _plain(s: Settings) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: str(v) if isinstance(v := getattr(s, f.name), Path) else v for f in fields(s)}
