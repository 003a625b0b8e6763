"""Pulls and fills go in batches: memory bounded by a batch, every file still verified and right."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from helpers import tree
from test_roundtrip import make_source

from lakecache.data.dataset import Dataset
from lakecache.data.materialize import materialize
from lakecache.lake.objects import BlobLocation


class _CountingCatalog:
    """The real catalog, counting how many digests each ``locate_blobs`` call asks about."""

    def __init__(self, catalog: Any) -> None:
        self._catalog = catalog
        self.asked: list[int] = []

    def locate_blobs(self, digests: Iterable[str]) -> dict[str, BlobLocation]:
        wanted = list(digests)
        self.asked.append(len(wanted))
        return self._catalog.locate_blobs(wanted)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)


def _entries(ds: Dataset) -> list[Any]:
    with ds._index("latest") as idx:
        return list(idx.entries(None))


def test_pull_in_small_batches_writes_every_file(ds: Dataset, tmp_path: Path) -> None:
    """Batches of 4: locations are asked 4 digests at a time, and the tree is whole.

    Fails on the code before batching: one lookup held every location at once.
    """
    files = make_source(tmp_path / "src")
    ds.commit(tmp_path / "src", message="first")
    entries = _entries(ds)
    catalog = _CountingCatalog(ds.hub.catalog)
    out = tmp_path / "out"
    stats = materialize(
        entries,
        out,
        lake=ds.hub.lake,
        catalog=catalog,  # type: ignore[arg-type]
        workers=4,
        batch_files=4,
    )
    assert tree(out) == files
    assert stats.files == len(files)
    assert max(catalog.asked) <= 4
    assert len(catalog.asked) >= len(files) // 4
    assert not any(".lakecache-tmp" in p.name for p in out.rglob("*"))


def test_fill_in_batches_links_and_fetches_read_only(ds: Dataset, tmp_path: Path) -> None:
    """A fill's mix of hard links and downloads across batches: every file right and 0444."""
    files = make_source(tmp_path / "src")
    ds.commit(tmp_path / "src", message="first")
    entries = _entries(ds)
    first = tmp_path / "first"
    materialize(entries, first, lake=ds.hub.lake, catalog=ds.hub.catalog, workers=2, read_only=True)
    # Sealed (read-only) like a cache's files, as link sources are. Every other
    # file can be linked from this copy; the rest come from the lake.
    linkable = {e.digest for e in entries[::2]}
    by_digest = {e.digest: str(first / e.path) for e in entries}

    def link_source(e: Any) -> str | None:
        return by_digest[e.digest] if e.digest in linkable else None

    staging = tmp_path / "staging"
    stats = materialize(
        entries,
        staging,
        lake=ds.hub.lake,
        catalog=ds.hub.catalog,
        workers=3,
        skip_existing=False,
        link_source=link_source,
        private_dest=True,
        read_only=True,
        batch_files=5,
    )
    assert tree(staging) == files
    assert stats.linked_files == sum(1 for e in entries if e.digest in linkable)
    assert stats.requests >= 1  # the rest came from the lake
    for e in entries:
        assert os.stat(staging / e.path).st_mode & 0o777 in (0o444, 0o555)


def test_a_linkable_hint_fetches_the_rest_first_and_a_wrong_hint_costs_only_a_download(
    ds: Dataset, tmp_path: Path
) -> None:
    """With ``linkable``, the files no source holds are fetched before any link is made.

    A hint that is wrong either way still gives every file right: a file it calls
    linkable that cannot be linked is downloaded after the links, and one it calls
    unlinkable is downloaded although it could have been linked.
    """
    files = make_source(tmp_path / "src")
    ds.commit(tmp_path / "src", message="first")
    entries = _entries(ds)
    first = tmp_path / "first"
    materialize(entries, first, lake=ds.hub.lake, catalog=ds.hub.catalog, workers=2, read_only=True)
    sources = {e.digest: str(first / e.path) for e in entries[::2]}
    gone = entries[0]
    (first / gone.path).unlink()  # its source vanished: the link fails, it is downloaded
    hint_no = entries[2].digest  # a source exists, but the hint says none: downloaded
    events: list[str] = []

    def link_source(e: Any) -> str | None:
        events.append("link")
        return sources.get(e.digest)

    def linkable(e: Any) -> bool:
        return e.digest in sources and e.digest != hint_no

    class _Catalog(_CountingCatalog):
        def locate_blobs(self, digests: Iterable[str]) -> dict[str, BlobLocation]:
            events.append("locate")  # planned here, in order; fetched right after
            return super().locate_blobs(digests)

    stats = materialize(
        entries,
        tmp_path / "staging",
        lake=ds.hub.lake,
        catalog=_Catalog(ds.hub.catalog),  # type: ignore[arg-type]
        workers=1,
        skip_existing=False,
        link_source=link_source,
        linkable=linkable,
        private_dest=True,
        read_only=True,
    )
    assert tree(tmp_path / "staging") == files
    linked = {e.path for e in entries if linkable(e)} - {gone.path}
    assert stats.linked_files == len(linked)
    # The hinted-unlinkable files' GETs were planned before the first link; the one
    # whose source vanished, after the links.
    assert events[0] == "locate" and events[-1] == "locate" and "link" in events
    assert events.count("locate") == 2
