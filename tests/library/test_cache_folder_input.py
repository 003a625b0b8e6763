"""A flow task's cached input is a folder inside a ready cache: train and evaluate read it as
its commit, through lakecache.torch (their own lease, the read reported to tracking), and a
commit's folder can be named as DATASET@REF/FOLDER. Other folders stay plain folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache import synth
from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import NotFoundError
from lakecache.library import image_classifier as ic
from lakecache.library.source import CommitSource, FolderSource, open_source
from lakecache.settings import Settings
from lakecache.tracking.store import TrackingStore


@pytest.fixture
def cache_folder(lake_env: Settings, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """NIH-layout images under ``nih/`` of a commit of ``xrays``, cached on site onprem:
    (the cache's ``nih`` folder, the commit id)."""
    synth.generate_nih(tmp_path / "src" / "nih", 40, size=24, images_per_folder=20, seed=3)
    (tmp_path / "src" / "README.txt").write_text("the images are in nih/\n")
    hub = Hub(lake_env)
    try:
        commit = Dataset.create("xrays", hub=hub).commit(tmp_path / "src", "nih in a folder")
        svc = CacheService(hub)
        now = svc.clock.now()
        (tmp_path / "vol").mkdir()
        svc.topology.add_site("onprem", "GPU cluster", now)
        svc.topology.add_volume("onprem-nfs", "onprem", str(tmp_path / "vol"), 10**9, 3600, now)
        rec = svc.ensure_ready(svc.request("xrays", commit.id, site="onprem"))
        yield svc.cache_path(rec) / "nih", commit.id
    finally:
        hub.close()


def test_train_and_evaluate_read_a_cache_folder_as_its_commit(
    cache_folder: tuple[Path, str], lake_env: Settings, tmp_path: Path
) -> None:
    folder, commit = cache_folder
    config = ic.TrainConfig(
        data=str(folder),
        out=str(tmp_path / "run"),
        arch="resnet18",
        image_size=16,
        batch_size=8,
        epochs=1,
        max_steps=1,
        workers=0,
        val=0.25,
        test=0.25,
        allow_empty_class=True,
        experiment="cache-folder",
    )
    ic.train(config, settings=lake_env)
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]
    assert data["commit"] == commit and data["read_from"] == "cache"
    assert data["label"] == f"xrays@{commit[:12]}/nih"
    ev = ic.evaluate(
        str(folder), tmp_path / "run" / "model.pt", tmp_path / "eval", workers=0, settings=lake_env
    )
    assert ev.images > 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["data"]["commit"] == commit
    hub = Hub(lake_env)
    try:
        store = TrackingStore(hub.catalog)
        (run,) = store.list_runs("cache-folder").items
        reads = store.run_inputs(run.run.id)
        assert {(r.dataset, r.commit_id, r.source) for r in reads} == {("xrays", commit, "cache")}
    finally:
        hub.close()


def test_a_commit_folder_by_name_and_folders_that_stay_folders(
    cache_folder: tuple[Path, str], lake_env: Settings, tmp_path: Path
) -> None:
    folder, commit = cache_folder
    with open_source(f"xrays@{commit[:12]}/nih", settings=lake_env) as named:
        assert isinstance(named, CommitSource) and named.prefix == "nih/"
        files = dict(named.files())
        assert "Data_Entry_2017.csv" in files and "README.txt" not in files
        assert named.read("Data_Entry_2017.csv") == (folder / "Data_Entry_2017.csv").read_bytes()
    # Not asked to, or asked not to use a cache: the folder as it is.
    assert isinstance(open_source(folder, settings=lake_env), FolderSource)
    plain = open_source(folder, settings=lake_env, cached=False, commits_of_caches=True)
    assert isinstance(plain, FolderSource)
    # A copy elsewhere, or a catalog that is not there: a folder too.
    shutil.copytree(folder, tmp_path / "copy")
    copy = open_source(tmp_path / "copy", settings=lake_env, commits_of_caches=True)
    assert isinstance(copy, FolderSource)
    nowhere = Settings(home=tmp_path / "no-home")
    alone = open_source(folder, settings=nowhere, commits_of_caches=True)
    assert isinstance(alone, FolderSource)
    assert not (tmp_path / "no-home" / "catalog.db").exists()
    with pytest.raises(NotFoundError, match="has no folder 'nope'"):
        open_source(f"xrays@{commit[:12]}/nope", settings=lake_env)
