from __future__ import annotations

from collections.abc import Iterator

import pytest

from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings


@pytest.fixture(params=["local", "s3"])
def lake_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The same tests against a local-folder lake and a real SeaweedFS S3 lake."""
    if request.param == "s3":
        return request.getfixturevalue("s3_settings")  # type: ignore[no-any-return]
    return settings


@pytest.fixture
def hub(lake_settings: Settings) -> Iterator[Hub]:
    h = Hub(lake_settings)
    yield h
    h.close()


@pytest.fixture
def ds(hub: Hub) -> Dataset:
    return Dataset.create("xray", hub=hub)
