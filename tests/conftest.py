"""Shared fixtures. Real services (SeaweedFS, PostgreSQL) start in their own plugin modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakecache.settings import Settings

pytest_plugins = ["fixtures.seaweed", "fixtures.postgres"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded default: a local-folder lake and a SQLite catalog under tmp_path."""
    return Settings(home=tmp_path / "home", workers=4, author="tester")
