"""write_blob: one verified blob to a file with os.write, under write_file's rules."""

from __future__ import annotations

import os
from pathlib import Path

from lakecache.data import materialize
from lakecache.data.materialize import write_blob


def test_atomic_write_leaves_no_temp_file_and_sets_read_only(tmp_path: Path) -> None:
    final = tmp_path / "a.png"
    data = os.urandom(300_000)
    write_blob(str(final), memoryview(data)[1000:], 0o644, read_only=True)
    assert final.read_bytes() == data[1000:]
    assert final.stat().st_mode & 0o777 == 0o444
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_executable_keeps_its_execute_bits(tmp_path: Path) -> None:
    final = tmp_path / "run.sh"
    write_blob(str(final), b"#!/bin/sh\n", 0o755)
    assert final.stat().st_mode & 0o111


def test_in_place_write_replaces_a_shared_inode_never_writes_through_it(tmp_path: Path) -> None:
    """A staging file left by a killed fill may be a hard link another cache shares."""
    other = tmp_path / "other-cache.png"
    other.write_bytes(b"old bytes")
    other.chmod(0o444)
    final = tmp_path / "staging.png"
    os.link(other, final)
    write_blob(str(final), b"new bytes", 0o644, atomic=False, read_only=True)
    assert final.read_bytes() == b"new bytes"
    assert other.read_bytes() == b"old bytes"
    assert final.stat().st_ino != other.stat().st_ino


def test_a_failed_write_leaves_nothing_under_either_name(tmp_path: Path) -> None:
    final = tmp_path / "missing-folder" / "a.png"
    try:
        write_blob(str(final), b"bytes", 0o644)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("writing into a missing folder should fail")
    assert list(tmp_path.iterdir()) == []


def test_temp_names_differ_in_a_forked_child(tmp_path: Path) -> None:
    """The per-process tag is drawn again after a fork: parent and child never share names."""
    final = str(tmp_path / "a.png")
    parent = materialize._tmp_name(final)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its name and leave at once
        os.close(read)
        os.write(write, materialize._tmp_name(final).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    tag = lambda name: name.rpartition("lakecache-tmp-")[2][:12]  # noqa: E731
    assert tag(parent) != tag(child)
    assert parent != materialize._tmp_name(final)  # the counter moves on
