"""A manifest's local index: read on demand as a list would hold it, patched from its parent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import lakecache.data.index as index_module
from lakecache.data.index import ManifestIndex
from lakecache.lake.objects import ManifestEntry


def _entries() -> list[ManifestEntry]:
    paths = [
        f"{folder}/{i:04d}.png" for folder in ("Edema", "Mass", "Mass/deep") for i in range(40)
    ]
    paths += ["Mass.txt", "Massive/x.png", "top.bin"]  # neighbours of "Mass" that are not under it
    return [ManifestEntry(p, f"{n:064x}", n, 0o644) for n, p in enumerate(sorted(paths))]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ManifestIndex]:
    ManifestIndex.build(tmp_path, "m" * 64, _entries())
    with ManifestIndex(ManifestIndex.location(tmp_path, "m" * 64), "m" * 64) as idx:
        yield idx


def test_the_sequence_reads_what_the_list_holds(index: ManifestIndex) -> None:
    want = _entries()
    with index.sequence() as seq:
        assert len(seq) == len(want) and list(seq) == want
        # Batch after batch (keyset reads), as a fill takes them ...
        got = [e for start in range(0, len(seq), 7) for e in seq[start : start + 7]]
        assert got == want
        # ... and slices anywhere, in any order (offset reads).
        for start, stop in ((50, 60), (3, 5), (50, 60), (110, 500), (0, 0)):
            assert seq[start:stop] == want[start:stop]
        assert seq[0] == want[0] and seq[-1] == want[-1]
        with pytest.raises(IndexError):
            seq[len(want)]
        with pytest.raises(ValueError, match="step"):
            seq[::2]


def test_a_folder_prefix_holds_only_that_folder(index: ManifestIndex) -> None:
    want = [e for e in _entries() if e.path.startswith("Mass/")]
    with index.sequence("Mass") as seq:
        assert len(seq) == 80 and list(seq) == want
        assert seq[30:50] + seq[50:80] == want[30:]
    with index.sequence("Mass.txt") as one:
        assert [e.path for e in one] == ["Mass.txt"]
    with index.sequence("Nothing") as none:
        assert len(none) == 0 and not none


def test_totals_and_folders_equal_a_pass_over_the_entries(index: ManifestIndex) -> None:
    # A fill sizes, seals and counts from these instead of passes over every entry.
    from lakecache.cache.seal import folders_of

    for prefix in ("", "Mass", "Mass/deep", "Mass.txt", "Nothing"):
        want = [
            e
            for e in _entries()
            if not prefix or e.path == prefix or e.path.startswith(prefix + "/")
        ]
        with index.sequence(prefix) as seq:
            assert seq.total_bytes() == sum(e.size for e in want)
            assert sorted(seq.digest_sizes()) == sorted((e.digest, e.size) for e in want)
            assert list(seq.paths_digests()) == [(e.path, e.digest) for e in want]
            assert seq.folders() == (folders_of(e.path for e in want) if want else set())
    with index.sequence("Mass/deep") as seq:
        assert seq.folders() == {"", "Mass", "Mass/deep"}


def test_shared_paths_name_a_path_of_each_shared_digest(tmp_path: Path) -> None:
    # The old commit holds some digests twice and at other paths; the new one adds its own.
    old = [ManifestEntry(f"a/{i:03d}", f"{i % 30:064x}", i, 0o644) for i in range(60)]
    old += [ManifestEntry(f"b/{i:03d}", f"{i + 100:064x}", i, 0o644) for i in range(10)]
    new = [ManifestEntry(f"c/{i:03d}", f"{i + 95:064x}", i, 0o644) for i in range(20)]
    new += [ManifestEntry(f"d/{i:03d}", f"{i:064x}", i, 0o644) for i in range(5)]
    ManifestIndex.build(tmp_path, "o" * 64, old)
    ManifestIndex.build(tmp_path, "n" * 64, new)
    with (
        ManifestIndex(ManifestIndex.location(tmp_path, "o" * 64), "o" * 64) as o,
        ManifestIndex(ManifestIndex.location(tmp_path, "n" * 64), "n" * 64) as n,
    ):
        assert n.digest_count() == 25
        for under in ("", "a", "b", "zzz"):
            got = n.shared_paths(o, under)
            held = {}
            for e in old:
                if not under or e.path.startswith(under + "/"):
                    held.setdefault(e.digest, set()).add(e.path)
            want = {e.digest for e in new if e.digest in held}
            assert set(got) == want
            assert all(got[d] in held[d] for d in got)
            # The probe for a few digests agrees with the join.
            probed = o.paths_of([e.digest for e in new], under)
            assert set(probed) == want and all(probed[d] in held[d] for d in probed)
        assert n.digests() == {e.digest for e in new}


def _rows(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    try:
        files = db.execute("SELECT * FROM files ORDER BY path").fetchall()
        dirs = db.execute("SELECT * FROM dirs ORDER BY path").fetchall()
    finally:
        db.close()
    return files, dirs


def test_a_child_commit_index_patched_from_its_parent_equals_a_fresh_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patched_ok: list[bool] = []
    real_patch = index_module._patch

    def spy(base: Path, tmp: Path, entries: list[ManifestEntry]) -> bool:
        patched_ok.append(real_patch(base, tmp, entries))
        return patched_ok[-1]

    monkeypatch.setattr(index_module, "_patch", spy)
    parent = _entries()
    child = {e.path: e for e in parent}
    child.pop("Massive/x.png")  # its folder empties and goes
    child.pop("Edema/0003.png")
    e = child["Mass/deep/0007.png"]
    child[e.path] = ManifestEntry(e.path, "f" * 64, e.size + 5, e.mode)  # modified, other size
    e = child["Edema/0010.png"]
    child[e.path] = ManifestEntry(e.path, e.digest, e.size, 0o755)  # only made executable
    for p in ("Mass/deep/er/new.png", "New/one.png", "zzz.bin"):  # new folders, new tail
        child[p] = ManifestEntry(p, "e" * 64, 7, 0o644)
    entries = [child[p] for p in sorted(child)]

    ManifestIndex.build(tmp_path / "a", "p" * 64, parent)
    patched = ManifestIndex.build(tmp_path / "a", "c" * 64, entries, parent="p" * 64)
    fresh = ManifestIndex.build(tmp_path / "b", "c" * 64, entries)

    assert patched_ok == [True]  # the copy of the parent was patched, not rebuilt
    assert _rows(patched) == _rows(fresh)
    files, dirs = _rows(patched)
    assert len(files) == len(entries) and ("Massive",) not in [(d[0],) for d in dirs]
    with ManifestIndex(patched, "c" * 64) as idx:
        assert idx.totals() == (len(entries), sum(e.size for e in entries))


def test_a_child_too_different_from_its_parent_is_built_afresh(tmp_path: Path) -> None:
    parent = _entries()
    entries = [ManifestEntry(e.path, "a" * 64, 1, e.mode) for e in parent]  # every file changed
    ManifestIndex.build(tmp_path / "a", "p" * 64, parent)
    patched = ManifestIndex.build(tmp_path / "a", "c" * 64, entries, parent="p" * 64)
    fresh = ManifestIndex.build(tmp_path / "b", "c" * 64, entries)
    assert _rows(patched) == _rows(fresh)
    assert not list((tmp_path / "a" / "manifests").glob(".tmp-*"))
