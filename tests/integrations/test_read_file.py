"""The cache's whole-file read: one open, one read, one close, and correct whatever the size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lakecache.integrations.reader import read_file


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 70_001])
def test_a_file_of_its_expected_size_reads_whole(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert read_file(str(path), size) == data


@pytest.mark.parametrize("expected", [0, 10, 99_999, 100_001, 300_000])
def test_a_file_of_another_size_is_read_to_its_end(tmp_path: Path, expected: int) -> None:
    # A file that does not hold the size its manifest says is still read whole, as
    # open().read() would, never cut at the expected size.
    data = os.urandom(100_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert read_file(str(path), expected) == data


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "gone.bin"), 10)


def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        read_file(str(path), 1000)
        read_file(str(path), 10)
    assert len(os.listdir("/proc/self/fd")) == before
