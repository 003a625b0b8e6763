"""The local-folder lake makes each object durable before its name: fsync, rename, fsync the folder.

The order is what matters after a power loss, and a power loss cannot be
caused here: so ``os.fsync`` and ``os.replace`` are wrapped (the real calls
still run) to record what was flushed, relative to the rename that publishes.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from lakecache.lake.local import LocalLake


class Calls:
    """The fsyncs (by the path their descriptor names) and renames, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def index(self, kind: str, predicate: str) -> int:
        for i, (k, what) in enumerate(self.events):
            if k == kind and predicate in what:
                return i
        raise AssertionError(f"no {kind} of {predicate!r} in {self.events}")


@pytest.mark.parametrize("how", ["put", "put_file"])
def test_an_object_is_flushed_then_renamed_then_its_folder_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    lake = LocalLake(tmp_path / "lake")
    calls = Calls(monkeypatch)
    body = os.urandom(100_000)
    if how == "put":
        lake.put("packs/ab/cdef", body)
    else:
        lake.put_file("packs/ab/cdef", io.BytesIO(body), len(body))
    final = lake.root / "packs" / "ab" / "cdef"
    assert final.read_bytes() == body
    (kind, renamed), *_ = [e for e in calls.events if e[0] == "replace"]
    tmp = renamed.split(" -> ")[0]
    assert renamed.endswith(f" -> {final}")
    flushed_bytes = calls.index("fsync", tmp)
    rename = calls.index("replace", str(final))
    flushed_name = [
        i for i, e in enumerate(calls.events) if e == ("fsync", str(final.parent)) and i > rename
    ]
    assert flushed_bytes < rename and flushed_name, calls.events
    # The folders made for the key are entries of their parents: flushed there too.
    assert calls.index("fsync", str(lake.root / "packs")) < rename
    assert ("fsync", str(lake.root)) in calls.events


def test_a_second_object_in_a_folder_costs_two_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = LocalLake(tmp_path / "lake")
    lake.put("blobs/aa/one", b"1")
    calls = Calls(monkeypatch)
    lake.put("blobs/aa/two", b"2")
    assert [k for k, _ in calls.events] == ["fsync", "replace", "fsync"]


def test_a_failed_flush_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync reporting a disk error must fail the put, never leave the object under its name."""
    lake = LocalLake(tmp_path / "lake")
    lake.put("blobs/aa/old", b"old")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        lake.put("blobs/aa/new", b"new")
    monkeypatch.undo()
    assert lake.exists(["blobs/aa/new", "blobs/aa/old"]) == {"blobs/aa/old"}
    assert sorted(os.listdir(lake.root / "blobs" / "aa")) == ["old"]  # no temporary file left
