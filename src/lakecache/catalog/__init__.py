"""The catalog: SQL metadata for datasets, commits, refs and the blob index.

SQLite by default, PostgreSQL for teams, through one code path; see
:mod:`lakecache.catalog.db` for the transaction and concurrency rules.
"""

from lakecache.catalog.db import Catalog, DatasetRecord, DatasetStats
from lakecache.catalog.names import check_dataset_name, check_ref_name

__all__ = ["Catalog", "DatasetRecord", "DatasetStats", "check_dataset_name", "check_ref_name"]
