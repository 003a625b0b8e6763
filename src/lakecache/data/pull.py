"""Pulls into a user's folder: never overwrite local work, and say what else is there.

A folder that a user pulls into is theirs: they edit labels in it, add files,
pull another commit on top. So before a pull writes anything it sorts every
path it is about to write into three kinds:

* absent, or already holding the target's bytes: nothing to decide;
* holding exactly what an earlier pull wrote there (same size, mtime and inode
  as recorded when it was written): lakecache's own file, replaced freely;
* anything else, a local edit or a file the user put there: a *conflict*. The
  pull stops and names them, unless the caller forces it.

Files under the pulled folders that the commit does not hold are left alone
and counted, or removed on request (like ``rsync --delete``).

The record of what pulls wrote is one SQLite file in the local state folder,
keyed by absolute path. Losing it only makes the next pull more careful: an
unrecorded file that differs from the commit counts as a conflict.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from lakecache.data.materialize import MaterializeStats
from lakecache.errors import UserError
from lakecache.lake.objects import ManifestEntry

#: How many paths an error or a report names before it says "and N more".
SHOWN = 10
_TMP_MARK = ".lakecache-tmp-"


@dataclass
class PullStats(MaterializeStats):
    """What a pull did, and what it found in the destination besides the commit."""

    #: Files with local changes that ``force`` overwrote.
    overwritten_files: int = 0
    #: Files under the pulled folders that the commit does not hold (left in place).
    extra_files: int = 0
    #: The first few of them, for a message.
    extra_shown: list[str] = field(default_factory=list)
    #: Files removed because ``delete`` was asked.
    deleted_files: int = 0


@dataclass
class PullCheck:
    """What a pull into ``dest`` would meet there, before it writes anything."""

    conflicts: list[str] = field(default_factory=list)
    extra_files: int = 0
    extra_shown: list[str] = field(default_factory=list)


class PullRecord:
    """Which files earlier pulls wrote, by absolute path (size, mtime, inode, digest)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pulled (path TEXT PRIMARY KEY, size INTEGER,"
            " mtime_ns INTEGER, ino INTEGER, digest TEXT) WITHOUT ROWID"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PullRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def written_by_pull(self, abspath: str, st: os.stat_result) -> bool:
        """True if the file at ``abspath`` is untouched since a pull wrote it."""
        row = self._db.execute(
            "SELECT size, mtime_ns, ino FROM pulled WHERE path = ?", (abspath,)
        ).fetchone()
        return row is not None and tuple(row) == (st.st_size, st.st_mtime_ns, st.st_ino)

    def remember(self, root: str, entries: Iterable[ManifestEntry]) -> None:
        """Record the files of ``entries`` as they now are under ``root``.

        One ``stat`` per file, relative to an open ``root`` (no walk down the
        root's own path each time); entries read from an index come as plain
        (path, digest) rows, not entry objects. After a pull of 20,000 files
        this pass is the only one not spread over threads.
        """
        pairs = getattr(entries, "paths_digests", None)
        rows_in: Iterable[tuple[str, str]] = (
            pairs() if pairs is not None else ((e.path, e.digest) for e in entries)
        )
        prefix = root.rstrip("/") + "/"
        rows = []
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            for rel, digest in rows_in:
                try:
                    st = os.stat(rel, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue  # gone already: nothing to vouch for
                rows.append((prefix + rel, st.st_size, st.st_mtime_ns, st.st_ino, digest))
                if len(rows) >= 10_000:
                    self._write(rows)
                    rows = []
        finally:
            os.close(fd)
        self._write(rows)

    def forget(self, paths: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM pulled WHERE path = ?", ((p,) for p in paths))

    def _write(self, rows: list[tuple[str, int, int, int, str]]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO pulled VALUES (?,?,?,?,?)", rows)


def _same_bytes(path: str, entry: ManifestEntry) -> bool:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest() == entry.digest


def check_dest(
    entries: Iterable[ManifestEntry],
    dest: Path,
    record: PullRecord,
    *,
    folders: list[str] | None,
) -> PullCheck:
    """Find the files a pull of ``entries`` into ``dest`` must not overwrite, and the extras.

    ``folders`` are the dataset paths the pull covers (None: all of it); files
    outside them are none of the pull's business. Costs one ``lstat`` per
    entry, a hash only for an unrecorded file of the right size, and a walk of
    the covered folders.
    """
    check = PullCheck()
    root = os.path.realpath(dest) if dest.exists() else str(dest.absolute())
    if not os.path.isdir(root):
        return check
    for e in entries:
        full = os.path.join(root, e.path)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            check.conflicts.append(e.path + "/")  # a folder where the commit has a file
            continue
        if record.written_by_pull(full, st):
            continue
        if st.st_size == e.size and not os.path.islink(full) and _same_bytes(full, e):
            continue
        check.conflicts.append(e.path)
    # The commit's paths as a set only once the folder holds a file: a pull into an
    # empty folder (the usual case) never holds every path of a large commit at once.
    wanted: set[str] | None = None
    for rel in _files_under(root, folders):
        if wanted is None:
            wanted = {e.path for e in entries}
        if rel not in wanted:
            check.extra_files += 1
            if len(check.extra_shown) < SHOWN:
                check.extra_shown.append(rel)
    return check


def delete_extras(
    entries: Iterable[ManifestEntry], dest: Path, record: PullRecord, *, folders: list[str] | None
) -> int:
    """Remove files under the covered folders that ``entries`` do not hold; returns how many.

    Folders left empty by this are removed too; ``dest`` itself stays.
    """
    root = os.path.realpath(dest)
    wanted = {e.path for e in entries}
    gone: list[str] = []
    for rel in _files_under(root, folders):
        if rel not in wanted:
            full = os.path.join(root, rel)
            os.unlink(full)
            gone.append(full)
    record.forget(gone)
    for base in _bases(root, folders):
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            if dirpath != root and not dirnames and not filenames:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # not empty after all (a file appeared): keep it
    return len(gone)


class PullConflictError(UserError):
    """A pull would overwrite files with local changes; nothing was written."""

    def __init__(self, check: PullCheck, spec: str, dest: Path, *, flag: str) -> None:
        shown = ", ".join(check.conflicts[:SHOWN])
        more = len(check.conflicts) - SHOWN
        if more > 0:
            shown += f" and {more:,} more"
        super().__init__(
            f"{len(check.conflicts):,} file(s) in {dest} differ from {spec} and were not "
            f"written by an earlier pull, so pulling would overwrite them: {shown}",
            hint=f"Move or commit your changes first, or pass {flag} to overwrite them.",
        )
        self.check = check
        self.spec = spec
        self.dest = dest


def _bases(root: str, folders: list[str] | None) -> list[str]:
    if not folders:
        return [root]
    return [os.path.join(root, f) for f in folders if os.path.isdir(os.path.join(root, f))]


def _files_under(root: str, folders: list[str] | None) -> Iterable[str]:
    """Relative paths of the files (and symlinks) under the covered folders of ``root``."""
    for base in _bases(root, folders):
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in filenames:
                if _TMP_MARK in name:
                    continue  # an interrupted pull's temporary file, not the user's
                yield prefix + name
            # os.walk lists a symlink to a folder among the folders: count it as an
            # entry of its own and do not follow it out of the tree.
            for name in list(dirnames):
                if os.path.islink(os.path.join(dirpath, name)):
                    dirnames.remove(name)
                    yield prefix + name
