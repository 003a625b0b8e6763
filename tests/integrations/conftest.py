"""Fixtures: ``xray@v1`` in a local-folder lake and in a bucket on the real SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.world import Lake, commit_images
from lakecache.settings import Settings


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Lake]:
    """``xray@v1`` in a local-folder lake, and in a bucket on the real SeaweedFS."""
    if request.param == "s3":
        settings = request.getfixturevalue("s3_settings")
    yield from commit_images(settings, tmp_path, request.param, corrupt=False)


@pytest.fixture
def folder_lake(settings: Settings, tmp_path: Path) -> Iterator[Lake]:
    """``xray@v1`` in a local-folder lake (whose objects a test can damage in place)."""
    yield from commit_images(settings, tmp_path, "folder", corrupt=False)


@pytest.fixture
def s3_lake(s3_settings: Settings, tmp_path: Path) -> Iterator[Lake]:
    """``xray@v1`` in a bucket on the real SeaweedFS."""
    yield from commit_images(s3_settings, tmp_path, "s3", corrupt=False)


@pytest.fixture
def corrupt_lake(settings: Settings, tmp_path: Path) -> Iterator[Lake]:
    """``xray@v1`` holding one file named .png that is not an image."""
    yield from commit_images(settings, tmp_path, "folder", corrupt=True)
