"""lakecache://DATASET@REF/path through fsspec's own entry points, pandas and PIL,
from the lake (folder and real SeaweedFS) and from a ready cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas
import pytest
from PIL import Image

from integrations.world import Lake, add_cache, index_of
from lakecache.errors import LakecacheError, UserError
from lakecache.fsspec import LakecacheFileSystem, PathNotFoundError
from lakecache.integrations.reads import ReadRecord, subscribe


@pytest.fixture(params=["stream", "cache"])
def source(request: pytest.FixtureRequest, lake: Lake, tmp_path: Path) -> Iterator[str]:
    """Read from the lake, or from a ready cache of xray@v1 on a volume mounted here."""
    if request.param == "cache":
        add_cache(lake, tmp_path / "vol")
    yield request.param
    LakecacheFileSystem.clear_instance_cache()


@pytest.fixture
def fs(lake: Lake, source: str) -> Iterator[LakecacheFileSystem]:
    filesystem = fsspec.filesystem("lakecache", settings=lake.settings)
    assert isinstance(filesystem, LakecacheFileSystem)
    yield filesystem
    filesystem.close()


def test_the_protocol_is_registered_by_entry_point() -> None:
    assert fsspec.get_filesystem_class("lakecache") is LakecacheFileSystem


def test_listings_come_from_the_manifest(fs: LakecacheFileSystem, lake: Lake) -> None:
    top = fs.ls("lakecache://xray@v1/", detail=True)
    assert [(i["name"], i["type"]) for i in top] == [
        ("xray@v1/docs", "directory"),
        ("xray@v1/images", "directory"),
    ]
    assert top[1]["files"] == 25
    assert fs.ls("xray@v1/images/Edema", detail=False)[:2] == [
        "xray@v1/images/Edema/000.png",
        "xray@v1/images/Edema/001.png",
    ]
    info = fs.info("lakecache://xray@v1/docs/readme.txt")
    assert info["type"] == "file" and info["size"] == len(lake.files["docs/readme.txt"])
    assert fs.info("xray@v1/images")["type"] == "directory"
    assert fs.isdir("xray@v1/images/Mass") and fs.isfile("xray@v1/images/labels.csv")
    assert fs.exists("xray@v1/docs/readme.txt") and not fs.exists("xray@v1/docs/none.txt")
    assert len(fs.find("xray@v1/images")) == 25
    assert fs.find("xray@v1/nothing") == []
    assert fs.glob("xray@v1/images/Hernia/*.png")[0] == "xray@v1/images/Hernia/008.png"
    assert fs.ukey("xray@v1/docs/readme.txt") == info["digest"]


def test_a_ref_without_at_is_latest(fs: LakecacheFileSystem) -> None:
    assert fs.cat_file("xray/docs/readme.txt") == fs.cat_file("xray@v1/docs/readme.txt")


def test_fsspec_open_pandas_and_pil_read_the_commit(lake: Lake, source: str) -> None:
    opts = {"settings": lake.settings}
    with fsspec.open("lakecache://xray@v1/docs/readme.txt", "rt", **opts) as f:
        assert f.read() == lake.files["docs/readme.txt"].decode()
    labels = pandas.read_csv("lakecache://xray@v1/images/labels.csv", storage_options=opts)
    assert list(labels.columns) == ["path", "label"] and len(labels) == 24
    with fsspec.open("lakecache://xray@v1/images/Mass/017.png", **opts) as f:
        image = Image.open(f)
        assert image.size == (6, 4) and index_of(image.convert("RGB")) == 17


def test_cat_of_many_files_and_ranges(fs: LakecacheFileSystem, lake: Lake) -> None:
    got = fs.cat("xray@v1/images/Edema", recursive=True)
    want = {f"xray@v1/{p}": d for p, d in lake.files.items() if p.startswith("images/Edema/")}
    assert got == want
    two = fs.cat(["xray@v1/docs/readme.txt", "xray@v1/images/labels.csv"])
    assert two["xray@v1/docs/readme.txt"] == lake.files["docs/readme.txt"]
    readme = lake.files["docs/readme.txt"]
    assert fs.cat_file("xray@v1/docs/readme.txt", start=6, end=-1) == readme[6:-1]
    assert fs.cat_file("xray@v1/docs/readme.txt", start=-6) == readme[-6:]
    csv = lake.files["images/labels.csv"]
    ranges = fs.cat_ranges(
        ["xray@v1/docs/readme.txt", "xray@v1/images/labels.csv", "xray@v1/docs/none.txt"],
        [0, 5, 0],
        [5, 20, 1],
    )
    assert ranges[:2] == [readme[:5], csv[5:20]]
    assert isinstance(ranges[2], FileNotFoundError)


def test_open_seeks_and_reads_ranges(fs: LakecacheFileSystem, lake: Lake) -> None:
    data = lake.files["images/labels.csv"]
    with fs.open("xray@v1/images/labels.csv", "rb") as f:
        f.seek(10)
        assert f.read(7) == data[10:17]
        f.seek(-4, 2)
        assert f.read() == data[-4:]


def test_a_commit_is_read_only(fs: LakecacheFileSystem) -> None:
    with pytest.raises(UserError, match="read-only") as caught:
        fs.open("xray@v1/new.txt", "wb")
    assert "lakecache data commit" in caught.value.hint
    for write in (
        lambda: fs.pipe_file("xray@v1/new.txt", b"x"),
        lambda: fs.rm("xray@v1/docs/readme.txt"),
        lambda: fs.mkdir("xray@v1/new"),
    ):
        with pytest.raises(UserError, match="read-only"):
            write()


def test_missing_paths_are_file_not_found_with_a_hint(fs: LakecacheFileSystem) -> None:
    with pytest.raises(PathNotFoundError) as caught:
        fs.info("xray@v1/docs/none.txt")
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, LakecacheError) and caught.value.hint
    with pytest.raises(FileNotFoundError):
        fs.cat_file("xray@v1/docs/none.txt")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("xray@v1/docs")
    with pytest.raises(UserError, match="names a commit first"):
        fs.ls("lakecache://")
    with pytest.raises(LakecacheError, match="nosuch"):
        fs.ls("nosuch@v1/")


def test_reads_are_reported_with_their_source(lake: Lake, source: str) -> None:
    heard: list[ReadRecord] = []
    unsubscribe = subscribe(heard.append)
    fs = LakecacheFileSystem(settings=lake.settings, skip_instance_cache=True)
    try:
        fs.cat_file("xray@v1/docs/readme.txt")
        fs.cat_file("xray@v1/images/labels.csv")  # the same commit: reported once
    finally:
        fs.close()
        unsubscribe()
    assert [(r.dataset, r.source, r.reader, r.files) for r in heard] == [
        ("xray", source, "fsspec", len(lake.files))
    ]
    assert heard[0].commit_id == lake.hub.catalog.resolve("xray", "v1")


def test_files_read_one_by_one_are_fetched_ahead(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = LakecacheFileSystem(settings=lake.settings, cached=False, skip_instance_cache=True)
    try:
        lake_of_reader = fs.reader("xray@v1").hub.lake
        real_get = lake_of_reader.get
        gets: list[str] = []

        def get(key: str, start: int = 0, length: int | None = None) -> bytes:
            gets.append(key)
            return real_get(key, start, length)

        monkeypatch.setattr(lake_of_reader, "get", get)
        folder = sorted(p for p in lake.files if p.startswith("images/Hernia/"))
        for path in folder:  # as a loop of PIL.Image.open(fs.open(path)) would
            assert fs.cat_file(f"xray@v1/{path}") == lake.files[path]
        assert len(gets) == 1  # the first file's GET brought its neighbours too
    finally:
        fs.close()
