"""Make writes survive a power loss: fsync the bytes before the rename that publishes them.

A rename is atomic for readers, but not durable by itself: after a crash the
filesystem may hold the new name pointing at a file whose data blocks never
reached the disk (a torn or empty object under a real name, which nothing
would rewrite, because its name says it is there). So every publishing write
here goes: write, fsync the file, rename, fsync the folder that holds the new
name (the rename itself is an entry in that folder).

For thousands of files (a cache fill) one fsync each costs a journal commit
each; :func:`sync_filesystem` flushes everything written to one filesystem in
one call instead, before the single rename that publishes the whole tree.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

__all__ = ["fsync_dir", "fsync_dirs", "makedirs_durable", "sync_filesystem"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk.

    Platforms that cannot open a folder for fsync (Windows) skip it: they have no
    other way to make a rename durable either.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except IsADirectoryError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(paths: Iterable[str | os.PathLike[str]]) -> int:
    """:func:`fsync_dir` each distinct folder once (a batch shares them); returns how many."""
    seen = {os.fspath(p) for p in paths}
    for p in sorted(seen):
        fsync_dir(p)
    return len(seen)


def makedirs_durable(path: str | os.PathLike[str], *, under: str | os.PathLike[str]) -> None:
    """``mkdir -p`` whose new folders survive a crash: each new one's parent is fsynced.

    ``under`` is a folder known to exist durably (a volume or lake root); it
    bounds the walk. Costs nothing when the folder exists already.
    """
    target = Path(path)
    if target.is_dir():
        return
    missing: list[Path] = []
    p = target
    top = Path(under)
    while not p.is_dir() and p != top and p != p.parent:
        missing.append(p)
        p = p.parent
    target.mkdir(parents=True, exist_ok=True)
    fsync_dirs(m.parent for m in missing)


@cache
def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) from the C library, or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Flush every write on the filesystem that holds ``path``: data, inodes and folders.

    One syncfs(2) call, however many files a fill wrote; on an NFS mount it
    writes back and commits that mount's dirty pages. Where syncfs is missing
    (not Linux), a global sync. Raises OSError when the kernel reports a
    writeback error (a disk that failed under the writes).
    """
    fn = _syncfs()
    if fn is None:  # pragma: no cover - not Linux
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)
