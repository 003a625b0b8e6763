"""A commit asks the catalog which blobs it holds once per batch of chunks read, not per chunk.

Through a server each question is a round trip; when answering is the slow part,
the chunks read meanwhile must go in one question.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from lakecache.data import commit as commit_module
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings


def test_a_slow_catalog_is_asked_once_for_the_chunks_read_meanwhile(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails on the old code: it asked once per chunk (40 questions)."""
    monkeypatch.setattr(commit_module, "CHUNK_FILES", 4)  # 160 files: 40 chunks
    src = tmp_path / "src"
    src.mkdir()
    for i in range(160):
        (src / f"f{i:03d}.bin").write_bytes(i.to_bytes(2, "big") * 500)
    hub = Hub(settings)
    try:
        ds = Dataset.create("xray", hub=hub)
        asked: list[int] = []
        known_blobs = hub.catalog.known_blobs

        def slow_known(digests: Iterable[str]) -> set[str]:
            wanted = set(digests)
            asked.append(len(wanted))
            time.sleep(0.1)  # a round trip to a busy server
            return known_blobs(wanted)

        monkeypatch.setattr(hub.catalog, "known_blobs", slow_known)
        commit = ds.commit(src, "many chunks")
        assert commit.file_count == 160
        assert sum(asked) == 160  # every new digest asked about once
        assert len(asked) <= 20, asked
        assert {e.path for e in ds.files()} == {f"f{i:03d}.bin" for i in range(160)}
    finally:
        hub.close()
