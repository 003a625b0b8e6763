"""The catalog's journal: where each change to datasets and refs is also recorded.

The lake is the source of truth, so the catalog, after each change's
compare-and-swap succeeded and before its transaction commits, tells its
journal (the lake's ref log, :class:`lakecache.lake.reflog.RefLog`). A journal
that fails rolls the change back. The catalog knows the journal only by this
protocol, never the lake behind it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Journal(Protocol):
    """Receives every change to datasets and refs, inside the catalog's transaction."""

    def dataset_created(
        self, name: str, owner: str, description: str, created_at: datetime
    ) -> None: ...

    def commit_added(
        self, dataset: str, commit_id: str, branch: str, previous: str | None
    ) -> None: ...

    def tag_set(self, dataset: str, tag: str, commit_id: str) -> None: ...

    def tag_deleted(self, dataset: str, tag: str) -> None: ...

    def dataset_deleted(self, dataset: str) -> None: ...
