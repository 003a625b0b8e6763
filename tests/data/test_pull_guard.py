"""Pulls into a folder a user works in: no silent overwrite, extras reported or deleted.

Also the commit side of the same first hour: an unchanged folder makes no commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_files, tree, write

from lakecache.data.dataset import Dataset
from lakecache.data.pull import PullConflictError
from lakecache.errors import UserError


@pytest.fixture
def two_versions(ds: Dataset, tmp_path: Path) -> tuple[Path, str, str]:
    src = make_files(tmp_path / "src", n=12, size=3000)
    write(src, "README.txt", b"version one", age=10)
    v1 = ds.commit(src, "first").id
    write(src, "README.txt", b"version two!", age=5)
    (src / "Mass" / "00001.png").unlink()
    v2 = ds.commit(src, "second").id
    return src, v1, v2


def test_pull_over_an_earlier_pull_replaces_its_files(
    ds: Dataset, two_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    src, v1, v2 = two_versions
    out = tmp_path / "out"
    ds.pull(v2, out)
    s = ds.pull(v1, out)  # README.txt differs, but a pull wrote it: replaced freely
    assert (out / "README.txt").read_bytes() == b"version one"
    assert s.overwritten_files == 0 and s.extra_files == 0
    s = ds.pull(v2, out)
    # v2 has no Mass/00001.png: it stays, and is counted, not deleted.
    assert (out / "Mass" / "00001.png").exists()
    assert s.extra_files == 1 and s.extra_shown == ["Mass/00001.png"]
    assert tree(out).get("README.txt") == b"version two!"


def test_pull_refuses_to_overwrite_a_local_edit(
    ds: Dataset, two_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, v1, v2 = two_versions
    out = tmp_path / "out"
    ds.pull(v2, out)
    write(out, "README.txt", b"my own careful notes", age=1)
    before = tree(out)
    with pytest.raises(PullConflictError) as info:
        ds.pull(v1, out)
    assert "README.txt" in info.value.message and "force=True" in info.value.hint
    assert tree(out) == before  # nothing written at all
    s = ds.pull(v1, out, force=True)
    assert (out / "README.txt").read_bytes() == b"version one"
    assert s.overwritten_files == 1


def test_a_file_the_user_put_there_is_a_conflict_unless_identical(
    ds: Dataset, two_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    src, _, v2 = two_versions
    out = tmp_path / "out"
    write(out, "README.txt", b"version two!")  # same bytes as the commit: no conflict
    write(out, "Edema/00000.png", b"not the image")
    with pytest.raises(PullConflictError) as info:
        ds.pull(v2, out)
    assert info.value.check.conflicts == ["Edema/00000.png"]


def test_delete_removes_what_the_commit_does_not_hold(
    ds: Dataset, two_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, v1, v2 = two_versions
    out = tmp_path / "out"
    ds.pull(v1, out)
    write(out, "scratch/notes.txt", b"mine")
    s = ds.pull(v2, out, delete=True)
    assert s.deleted_files == 2 and s.extra_files == 0
    assert not (out / "Mass" / "00001.png").exists()
    assert not (out / "scratch").exists()  # emptied folders go too
    assert sorted(tree(out)) == sorted(f.path for f in ds.files(v2))


def test_sub_folder_pull_takes_a_string_and_only_looks_under_it(
    ds: Dataset, two_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, _, v2 = two_versions
    out = tmp_path / "out"
    write(out, "elsewhere.txt", b"not under Mass/")
    s = ds.pull(v2, out, paths="Mass/")
    assert s.files == 3 and s.extra_files == 0
    assert {p.split("/")[0] for p in tree(out)} == {"Mass", "elsewhere.txt"}


def test_unchanged_folder_makes_no_commit(ds: Dataset, tmp_path: Path) -> None:
    src = make_files(tmp_path / "src", n=6, size=500)
    first = ds.commit(src, "first")
    again = ds.commit(src, "same again")
    assert again.id == first.id
    assert ds.last_commit_stats is not None and not ds.last_commit_stats.created
    assert len(ds.log()) == 1
    forced = ds.commit(src, "forced", allow_empty=True)
    assert forced.id != first.id and forced.parents == (first.id,)
    assert ds.last_commit_stats is not None and ds.last_commit_stats.created


def test_commit_of_a_missing_folder_says_it_does_not_exist(ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        ds.commit(tmp_path / "missing", "x")
    write(tmp_path, "a-file", b"x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        ds.commit(tmp_path / "a-file", "x")


def test_ls_after_takes_a_name_as_listed(ds: Dataset, tmp_path: Path) -> None:
    src = make_files(tmp_path / "src", n=9, size=100)
    ds.commit(src, "first")
    page = ds.ls(None, "Mass", limit=2)
    by_name = ds.ls(None, "Mass", limit=2, after=page[-1].name)
    by_path = ds.ls(None, "Mass", limit=2, after=page[-1].path)
    assert [i.path for i in by_name] == [i.path for i in by_path]
    assert by_name and by_name[0].path not in {i.path for i in page}
    root_page = ds.ls(None, "", limit=1)
    assert ds.ls(None, "", limit=5, after=root_page[0].name + "/")[0].name != root_page[0].name


def test_a_pull_reads_the_commit_from_its_index_in_batches(
    ds: Dataset,
    two_versions: tuple[Path, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A list of every entry costs ~250 B a file (150 MiB for 627,615): a pull of the
    # whole commit or of one folder reads the index a batch at a time instead.
    from lakecache.data import index as index_module

    listed: list[object] = []
    entries = index_module.ManifestIndex.entries

    def spy(self: index_module.ManifestIndex, prefixes: object = None) -> object:
        listed.append(prefixes)
        return entries(self, prefixes)  # type: ignore[arg-type]

    monkeypatch.setattr(index_module.ManifestIndex, "entries", spy)
    src, _, v2 = two_versions
    s = ds.pull(v2, tmp_path / "all")
    assert tree(tmp_path / "all") == tree(src) and s.files == len(tree(src))
    s = ds.pull(v2, tmp_path / "mass", "Mass")
    assert set(tree(tmp_path / "mass")) == {p for p in tree(src) if p.startswith("Mass/")}
    assert listed == []
    with pytest.raises(UserError, match="Nothing"):
        ds.pull(v2, tmp_path / "none", "Nothing")
