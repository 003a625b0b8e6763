"""The lake and the catalog of one configuration, opened lazily and shared."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.lake import Lake
    from lakecache.settings import Settings


class Hub:
    """Holds one settings object and the lake and catalog it names.

    Opening is lazy so that a command that only reads the catalog never loads
    the S3 client, and one that only lists never touches the lake.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lake: Lake | None = None
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()

    @property
    def lake(self) -> Lake:
        with self._lock:
            if self._lake is None:
                from lakecache.lake import open_lake

                self._lake = open_lake(self.settings)
            return self._lake

    @property
    def catalog(self) -> Catalog:
        with self._lock:
            if self._catalog is None:
                from lakecache.catalog import Catalog

                self._catalog = Catalog.open(self.settings.catalog_url)
            return self._catalog

    def close(self) -> None:
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None
            self._lake = None
