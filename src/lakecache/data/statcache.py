"""Remember the digest of each file by its stat, so a re-commit reads only what changed.

Keyed by absolute path; valid while size, mtime, ctime and inode are equal.
ctime is included because a user cannot set it back (tools that preserve
mtime, like ``cp -p`` or ``touch -d``, still move ctime). A file whose mtime is
within two seconds of the scan is not remembered: it may still be written to
within the same timestamp tick ("racy" entries, as git calls them).

One SQLite file in the local state folder; losing it only costs a re-hash.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from lakecache.data.scan import SourceFile

_RACY_NS = 2_000_000_000


class StatCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS stat (path TEXT PRIMARY KEY, size INTEGER,"
            " mtime_ns INTEGER,"
            " ctime_ns INTEGER, ino INTEGER, digest TEXT) WITHOUT ROWID"
        )
        self.started_ns = time.time_ns()

    def close(self) -> None:
        self._db.close()

    def lookup(self, root: str, files: list[SourceFile]) -> Iterator[tuple[SourceFile, str | None]]:
        """Yield (file, digest or None) for each file, in order; one range scan, merged.

        ``files`` must be sorted by path, which makes their absolute paths sorted too
        (same root), so the cache rows can be merged in without a dict of everything.
        """
        if not files:
            return
        # Every abspath is root + "/" + path; "0" is the character after "/". SQLite
        # strips the root, so each row compares with a scanned path as it is.
        rows = self._db.execute(
            "SELECT substr(path, ?), size, mtime_ns, ctime_ns, ino, digest FROM stat"
            " WHERE path > ? AND path < ? ORDER BY path",
            (len(root) + 2, root + "/", root + "0"),
        )
        it = iter(rows)
        row = next(it, None)
        for f in files:
            path = f.path
            while row is not None and row[0] < path:  # str order == UTF-8 byte order
                row = next(it, None)
            if (
                row is not None
                and row[0] == path
                and row[1] == f.size
                and row[2] == f.mtime_ns
                and row[3] == f.ctime_ns
                and row[4] == f.ino
            ):
                yield f, row[5]
            else:
                yield f, None
        rows.close()

    def remember(self, items: Iterable[tuple[SourceFile, str]]) -> None:
        """Store digests of files just hashed, skipping racy ones.

        Rows are streamed into SQLite, never listed: a first commit of 627,615
        files remembers every one, and a list of them would be ~150 MiB.
        """
        limit = self.started_ns - _RACY_NS
        rows = (
            (f.abspath, f.size, f.mtime_ns, f.ctime_ns, f.ino, d)
            for f, d in items
            if f.mtime_ns < limit
        )
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO stat VALUES (?,?,?,?,?,?)", rows)
