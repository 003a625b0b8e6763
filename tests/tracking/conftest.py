"""Tracking tests run on a SQLite file and, where marked, on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache.catalog import Catalog
from lakecache.tracking.store import TrackingStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = Catalog.open(catalog_url)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def store(catalog: Catalog) -> TrackingStore:
    return TrackingStore(catalog)
