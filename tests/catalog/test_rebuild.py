"""The lake is the source of truth: a lost catalog is rebuilt from the lake alone.

Commits go to a real SeaweedFS S3 lake; the rebuilt catalog is a new SQLite file
and a new PostgreSQL database (``catalog_url``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lakecache.catalog import Catalog
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.rebuild import rebuild
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import UserError
from lakecache.settings import Settings

pytestmark = pytest.mark.s3


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _snapshot(catalog: Catalog) -> dict[str, object]:
    """Everything a rebuild must bring back, per dataset."""
    out: dict[str, object] = {}
    for d in catalog.list_datasets():
        out[d.name] = {
            "owner": d.owner,
            "description": d.description,
            "log": [c.id for c in catalog.log(d.name)]
            if catalog.dataset_stats(d.name)["head"]
            else [],
            "head": catalog.head(d.name),
            "tags": catalog.tags(d.name),
        }
    return out


def test_delete_the_catalog_rebuild_it_from_the_lake_and_find_everything(
    s3_settings: Settings, catalog_url: str, tmp_path: Path
) -> None:
    lost = tmp_path / "lost" / "catalog.db"
    hub = Hub(s3_settings.with_(catalog_url=f"sqlite:///{lost}"))
    try:
        xray = Dataset.create("xray", hub=hub, description="chest x-rays")
        big = {f"img/{i:03}.png": os.urandom(1500 + i) for i in range(40)}
        big["large.bin"] = os.urandom(9 << 20)  # stored alone, not in a pack
        xray.commit(_write(tmp_path / "x", big), "first import")
        xray.tag("v1")
        big["img/000.png"] = b"fixed label"
        xray.commit(_write(tmp_path / "x", big), "fix a label")
        xray.tag("v2")
        xray.tag("scratch")
        hub.catalog.delete_tag("xray", "scratch")
        xray.tag("v1", xray.resolve("latest"), force=True)  # a moved tag ends where it moved

        notes = Dataset.create("notes", hub=hub)
        notes.commit(_write(tmp_path / "n", {"a.txt": b"a"}))
        Dataset.create("empty", hub=hub)
        gone = Dataset.create("gone", hub=hub)
        gone.commit(_write(tmp_path / "g", {"g.txt": b"g"}))
        Accounts(hub.catalog).delete_dataset("gone")
        expected = _snapshot(hub.catalog)
        files = {e.id: sorted((f.path, f.digest) for f in xray.files(e.id)) for e in xray.log()}
        lake = hub.lake
        # The catalog is lost; only the lake is left.
        hub.catalog.close()
        for path in lost.parent.iterdir():
            path.unlink()
        fresh = Catalog.open(catalog_url)
        try:
            result = rebuild(fresh, lake)
            assert result.missing_commits == []
            assert result.datasets == 3 and result.commits == 3
            assert _snapshot(fresh) == expected
            assert "gone" not in _snapshot(fresh)
            # Every file of every commit is located, and pulls with its bytes checked.
            rebuilt = Hub(s3_settings.with_(catalog_url=catalog_url))
            try:
                ds = Dataset("xray", hub=rebuilt)
                for i, entry in enumerate(ds.log()):
                    assert sorted((f.path, f.digest) for f in ds.files(entry.id)) == files[entry.id]
                    assert ds.pull(entry.id, tmp_path / f"out{i}").files == len(big)
                assert (tmp_path / "out0" / "img/000.png").read_bytes() == b"fixed label"
            finally:
                rebuilt.close()

            with pytest.raises(UserError) as refused:
                rebuild(fresh, lake)
            assert "not empty" in refused.value.message and "--force" in refused.value.hint
            again = rebuild(fresh, lake, force=True)
            assert sorted(again.skipped) == ["empty", "notes", "xray"]
        finally:
            fresh.close()
    finally:
        hub.close()
