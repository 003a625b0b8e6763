"""Small builders for catalog tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lakecache.catalog import Catalog
from lakecache.lake.objects import Commit, hash_bytes

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_commit(
    dataset: str, parents: tuple[str, ...] = (), message: str = "", minute: int = 0
) -> Commit:
    """A commit ``minute`` minutes after T0; ``message`` makes its id unique."""
    return Commit(
        dataset=dataset,
        manifest=hash_bytes(message.encode()),
        parents=parents,
        author="tester",
        message=message,
        created_at=(T0 + timedelta(minutes=minute)).isoformat(),
        file_count=len(message),
        bytes=100 * len(message),
    )


def commit_chain(catalog: Catalog, dataset: str, n: int, start_minute: int = 0) -> list[str]:
    """Add ``n`` commits in a line on ``main`` after its current head; return their ids."""
    ids: list[str] = []
    head = catalog.head(dataset)
    for i in range(n):
        minute = start_minute + i
        commit = make_commit(dataset, (head,) if head else (), f"commit {minute}", minute)
        head = catalog.add_commit(commit, expected_head=head)
        ids.append(head)
    return ids
