"""Fixtures of the AI library's tests: tiny synthetic NIH-layout sets, folders and commits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache import synth
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings


@pytest.fixture
def nih(tmp_path: Path) -> Path:
    """40 NIH-layout images of 24 px in two image folders, with the CSV and split lists."""
    dest = tmp_path / "nih"
    synth.generate_nih(dest, 40, size=24, images_per_folder=20, seed=3)
    return dest


@pytest.fixture
def lake_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's lake and catalog, also for code that loads settings from the environment."""
    monkeypatch.setenv("LAKECACHE_HOME", str(settings.home))
    monkeypatch.setenv("LAKECACHE_AUTHOR", settings.author)
    monkeypatch.delenv("LAKECACHE_LAKE", raising=False)
    monkeypatch.delenv("LAKECACHE_CATALOG", raising=False)
    monkeypatch.delenv("LAKECACHE_SERVER", raising=False)
    monkeypatch.delenv("LAKECACHE_OUTPUTS", raising=False)
    return settings


@pytest.fixture
def nih_commit(nih: Path, lake_env: Settings) -> Iterator[str]:
    """The ``nih`` folder committed as dataset ``xray`` (tag v1); yields ``xray@v1``."""
    hub = Hub(lake_env)
    try:
        ds = Dataset.create("xray", hub=hub)
        ds.commit(nih, "synthetic NIH layout")
        ds.tag("v1")
        yield "xray@v1"
    finally:
        hub.close()
