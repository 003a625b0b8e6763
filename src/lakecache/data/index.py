"""A local, queryable copy of a manifest: folder listings and diffs without a full read.

The lake holds each manifest once, compressed. Each machine that lists or
diffs a commit keeps a SQLite index of it under ``state/manifests/`` (built
once, atomically: a temp file renamed into place). A listing is an indexed
lookup by folder and a diff is a join of two indexes, so neither costs time in
proportion to the whole commit the second time round. The index is derived
data: deleting it only costs a rebuild from the lake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

from lakecache.errors import IntegrityError, NotFoundError
from lakecache.lake.objects import ManifestEntry, decode_manifest, hash_bytes, manifest_key

if TYPE_CHECKING:
    from lakecache.lake import Lake

_SCHEMA = """
CREATE TABLE files (path TEXT PRIMARY KEY, dir TEXT NOT NULL, name TEXT NOT NULL,
                    digest TEXT NOT NULL, size INTEGER NOT NULL, mode INTEGER NOT NULL)
                    WITHOUT ROWID;
CREATE INDEX files_dir ON files (dir, name);
CREATE INDEX files_digest ON files (digest);
CREATE TABLE dirs (path TEXT PRIMARY KEY, parent TEXT, name TEXT NOT NULL,
                   files INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX dirs_parent ON dirs (parent, name);
"""


@dataclass(frozen=True)
class FolderItem:
    """One row of a listing: a file, or a folder with its recursive totals."""

    name: str
    path: str
    is_dir: bool
    size: int
    files: int = 1
    digest: str | None = None


#: Where a page of a listing ends: ("d", folder name) or ("f", file name).
PageKey = tuple[str, str]


@dataclass(frozen=True)
class Change:
    path: str
    status: str  # "added" | "removed" | "modified"
    old_size: int | None
    new_size: int | None
    old_digest: str | None = None
    new_digest: str | None = None


class ManifestIndex:
    """Read-only view of one manifest."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        self.digest = digest
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ManifestIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def location(state_dir: Path, digest: str) -> Path:
        return state_dir / "manifests" / f"{digest}.db"

    @classmethod
    def build(
        cls,
        state_dir: Path,
        digest: str,
        entries: Iterable[ManifestEntry],
        *,
        parent: str | None = None,
    ) -> Path:
        """Write the index of a manifest (no-op if it exists).

        With ``parent`` (the manifest of the commit before) indexed here and
        ``entries`` a list, the index is the parent's, copied and changed where
        the two differ: a re-commit of 1% of a large folder writes 1% of the
        rows, not every row and its three indexes again.
        """
        final = cls.location(state_dir, digest)
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}.db")
        if parent is not None and isinstance(entries, list):
            base = cls.location(state_dir, parent)
            if base.exists() and _patch(base, tmp, entries):
                os.replace(tmp, final)
                return final
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
            totals: dict[str, list[int]] = {"": [0, 0]}

            def rows() -> Iterator[tuple[str, str, str, str, int, int]]:
                for e in entries:
                    d, _, n = e.path.rpartition("/")
                    yield (e.path, d, n, e.digest, e.size, e.mode)
                    # Every ancestor folder counts this file.
                    while True:
                        t = totals.get(d)
                        if t is None:
                            t = totals[d] = [0, 0]
                        t[0] += 1
                        t[1] += e.size
                        if not d:
                            break
                        d = d.rpartition("/")[0]

            db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?)", rows())
            db.executemany(
                "INSERT INTO dirs VALUES (?,?,?,?,?)",
                (
                    (p, None if not p else p.rpartition("/")[0], p.rpartition("/")[2], t[0], t[1])
                    for p, t in totals.items()
                ),
            )
            db.commit()
        finally:
            db.close()
        os.replace(tmp, final)
        return final

    @classmethod
    def open(cls, state_dir: Path, digest: str, lake: Callable[[], Lake]) -> ManifestIndex:
        """Open the local index of a manifest, fetching and indexing it first if needed.

        ``lake`` is called only then: a listing of an indexed commit never
        creates an S3 client (about 100 ms in a fresh process).
        """
        path = cls.location(state_dir, digest)
        if not path.exists():
            store = lake()
            data = store.get(manifest_key(digest))
            if hash_bytes(data) != digest:
                raise IntegrityError(
                    f"manifest {manifest_key(digest)} in lake {store.url} is damaged "
                    "(hash mismatch)"
                )
            cls.build(state_dir, digest, decode_manifest(data))
        return cls(path, digest)

    def totals(self) -> tuple[int, int]:
        row = self._db.execute("SELECT files, bytes FROM dirs WHERE path = ''").fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def ls(self, folder: str = "") -> list[FolderItem]:
        """List one folder: sub-folders first (with totals), then files, each sorted by name."""
        dirs = self._db.execute(
            "SELECT name, path, files, bytes FROM dirs WHERE parent = ? ORDER BY name", (folder,)
        ).fetchall()
        files = self._db.execute(
            "SELECT name, path, size, digest FROM files WHERE dir = ? ORDER BY name", (folder,)
        ).fetchall()
        if not dirs and not files and folder:
            e = self.get(folder)
            if e is not None:
                return [FolderItem(folder.rpartition("/")[2], e.path, False, e.size, 1, e.digest)]
            raise NotFoundError(
                f"no folder or file {folder!r} in this commit",
                hint="List the parent folder to see what is there.",
            )
        return [FolderItem(n, p, True, b, c) for n, p, c, b in dirs] + [
            FolderItem(n, p, False, s, 1, d) for n, p, s, d in files
        ]

    def folder_totals(self, folder: str) -> tuple[int, int] | None:
        """(files, bytes) under ``folder`` ('' for the root), or None if it is not a folder."""
        row = self._db.execute("SELECT files, bytes FROM dirs WHERE path = ?", (folder,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def ls_page(
        self, folder: str, *, limit: int, after: PageKey | None = None
    ) -> tuple[list[FolderItem], PageKey | None]:
        """Up to ``limit`` items of ``folder`` in :meth:`ls` order, by keyset.

        ``after`` is the key of the last item of the previous page (as returned);
        the result is the page and the key to continue after, None at the end.
        Page 1,000 costs what page 1 does, however big the folder. A file path
        gives a one-item listing of itself; NotFoundError if it is neither.
        """
        db = self._db
        if self.folder_totals(folder) is None:
            entry = self.get(folder)
            if entry is None:
                raise NotFoundError(
                    f"no folder or file {folder!r} in this commit",
                    hint="List the parent folder to see what is there.",
                )
            name = folder.rpartition("/")[2]
            return [FolderItem(name, entry.path, False, entry.size, 1, entry.digest)], None
        out: list[FolderItem] = []
        want = limit + 1  # one more than the page says whether another page follows
        kind, last = after if after is not None else ("d", None)
        if kind == "d":
            q = "SELECT name, path, files, bytes FROM dirs WHERE parent = ?"
            args: tuple[object, ...] = (folder,)
            if last is not None:
                q += " AND name > ?"
                args += (last,)
            rows = db.execute(q + " ORDER BY name LIMIT ?", (*args, want)).fetchall()
            out += [FolderItem(n, p, True, b, c) for n, p, c, b in rows]
            last = None
        if len(out) < want:
            q = "SELECT name, path, size, digest FROM files WHERE dir = ?"
            args = (folder,)
            if last is not None:
                q += " AND name > ?"
                args += (last,)
            rows = db.execute(q + " ORDER BY name LIMIT ?", (*args, want - len(out))).fetchall()
            out += [FolderItem(n, p, False, s, 1, d) for n, p, s, d in rows]
        if len(out) <= limit:
            return out, None
        page = out[:limit]
        tail = page[-1]
        return page, ("d" if tail.is_dir else "f", tail.name)

    def page_key(self, path: str) -> PageKey:
        """The key to list on after the item at ``path`` (a folder's or a file's)."""
        name = path.rstrip("/").rpartition("/")[2]
        return ("d" if self.folder_totals(path.rstrip("/")) is not None else "f", name)

    def get(self, path: str) -> ManifestEntry | None:
        row = self._db.execute(
            "SELECT path, digest, size, mode FROM files WHERE path = ?", (path,)
        ).fetchone()
        return ManifestEntry(*row) if row else None

    def entries(self, prefixes: Iterable[str] | None = None) -> Iterator[ManifestEntry]:
        """All entries in path order, or those equal to or under each of ``prefixes``."""
        q = "SELECT path, digest, size, mode FROM files"
        if prefixes is None:
            for row in self._db.execute(q + " ORDER BY path"):
                yield ManifestEntry(*row)
            return
        for p in sorted(set(prefixes)):
            if not p:
                yield from self.entries()
                return
            found = False
            for row in self._db.execute(
                q + " WHERE path = ? OR (path > ? AND path < ?) ORDER BY path",
                (p, p + "/", p + "0"),
            ):
                found = True
                yield ManifestEntry(*row)
            if not found:
                raise NotFoundError(
                    f"no file or folder {p!r} in this commit",
                    hint="Check the path with `lakecache data ls`.",
                )

    def sequence(self, prefix: str = "") -> IndexedEntries:
        """The entries equal to or under ``prefix`` ('' for all) as a sequence read on demand.

        For a fill or pull of a large commit: its length, an iteration or a slice
        reads SQLite each time, so no list of every entry (about 250 bytes per
        file: 150 MiB for 627,615) is ever held. Close it when done.
        """
        return IndexedEntries(self.path, prefix)

    def digests(self) -> set[str]:
        """Every distinct digest the manifest holds."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT digest FROM files")}

    def paths_of(self, digests: Iterable[str], under: str = "") -> dict[str, str]:
        """For each of ``digests`` this manifest holds (under folder ``under``): one path.

        One index probe per digest: for the few blobs a new cache still lacks after
        :meth:`shared_paths` with its nearest relative, instead of another whole join.
        """
        q = "SELECT path FROM files WHERE digest = ?"
        extra: tuple[str, ...] = ()
        if under:
            q += " AND (path = ? OR (path > ? AND path < ?))"
            extra = (under, under + "/", under + "0")
        out: dict[str, str] = {}
        for d in digests:
            row = self._db.execute(q + " LIMIT 1", (d, *extra)).fetchone()
            if row is not None:
                out[d] = row[0]
        return out

    def digest_count(self) -> int:
        """How many distinct blobs the manifest holds (one pass over the digest index)."""
        return int(self._db.execute("SELECT count(DISTINCT digest) FROM files").fetchone()[0])

    def path_digests(self) -> Iterator[tuple[str, str]]:
        """(path, digest) of every file in path order: plain tuples, for merges over a commit."""
        yield from self._db.execute("SELECT path, digest FROM files ORDER BY path")

    def shared_paths(self, other: ManifestIndex, under: str = "") -> dict[str, str]:
        """For each digest of this manifest that ``other`` also holds: one of its paths there.

        One query in SQLite (``other`` is indexed by digest), so finding the
        files a new cache can hard-link from an old one costs no Python loop
        over ``other``. ``under`` keeps only ``other``'s paths in that folder.
        Each file takes the first path of its digest (one index probe): no
        DISTINCT over every pair, which sorted them all in a temporary tree.
        """
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            db.execute("ATTACH DATABASE ? AS other", (f"file:{other.path}?mode=ro",))
            where = "o.digest = n.digest"
            args: tuple[str, ...] = ()
            if under:
                where += " AND (o.path = ? OR (o.path > ? AND o.path < ?))"
                args = (under, under + "/", under + "0")
            q = (
                f"SELECT n.digest, (SELECT o.path FROM other.files o WHERE {where} LIMIT 1)"
                " FROM main.files n"
            )
            out: dict[str, str] = {}
            for d, p in db.execute(q, args):
                if p is not None and d not in out:
                    out[d] = p
            return out
        finally:
            db.close()

    def diff(self, other: ManifestIndex) -> Iterator[Change]:
        """Changes from this manifest to ``other``: removed and modified, then added."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            db.execute("ATTACH DATABASE ? AS other", (f"file:{other.path}?mode=ro",))
            for path, od, os_, nd, ns in db.execute(
                "SELECT a.path, a.digest, a.size, b.digest, b.size FROM main.files a"
                " LEFT JOIN other.files b ON b.path = a.path"
                " WHERE b.path IS NULL OR b.digest != a.digest OR b.mode != a.mode"
            ):
                if nd is None:
                    yield Change(path, "removed", os_, None, od, None)
                else:
                    yield Change(path, "modified", os_, ns, od, nd)
            for path, nd, ns in db.execute(
                "SELECT b.path, b.digest, b.size FROM other.files b"
                " WHERE NOT EXISTS (SELECT 1 FROM main.files a WHERE a.path = b.path)"
            ):
                yield Change(path, "added", None, ns, None, nd)
        finally:
            db.close()


class IndexedEntries(Sequence[ManifestEntry]):
    """A manifest's entries (all, or under one folder), in path order, read from its index.

    Iterating streams one query; a slice that starts where the previous one
    ended continues after its last path (a keyset read), any other slice is a
    ``LIMIT``/``OFFSET`` query. So taking a commit batch by batch holds one
    batch at a time and costs one pass. Not for random access one entry at a
    time. Safe to read from several threads (SQLite serialises the
    connection); :meth:`close` when done.
    """

    _COLUMNS = "SELECT path, digest, size, mode FROM files"

    def __init__(self, path: Path, prefix: str = "") -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        if prefix:
            self._where = "(path = ? OR (path > ? AND path < ?))"
            self._args: tuple[str, ...] = (prefix, prefix + "/", prefix + "0")
        else:
            self._where, self._args = "1", ()
        q = f"SELECT count(*) FROM files WHERE {self._where}"
        self._len = int(self._db.execute(q, self._args).fetchone()[0])
        self._lock = threading.Lock()
        #: Where the last slice ended: its end index and last path, for a keyset read.
        self._after: tuple[int, str] | None = None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> IndexedEntries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._len

    def total_bytes(self) -> int:
        """The entries' bytes, summed in SQLite (no entry is made)."""
        q = f"SELECT coalesce(sum(size), 0) FROM files WHERE {self._where}"
        with self._lock:
            return int(self._db.execute(q, self._args).fetchone()[0])

    def digest_sizes(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every entry, as plain tuples: a pass that needs no paths."""
        q = f"SELECT digest, size FROM files WHERE {self._where}"
        yield from self._db.execute(q, self._args)

    def paths_digests(self) -> Iterator[tuple[str, str]]:
        """(path, digest) of every entry in path order, as plain tuples (no entry objects)."""
        q = f"SELECT path, digest FROM files WHERE {self._where} ORDER BY path"
        yield from self._db.execute(q, self._args)

    def folders(self) -> set[str]:
        """Every folder that holds an entry ('' included), as :func:`folders_of` gives them.

        Read from the index's folder table: no pass over the files.
        """
        prefix = self._args[0] if self._args else ""
        q = "SELECT path FROM dirs"
        args: tuple[str, ...] = ()
        if prefix:
            q += " WHERE path = ? OR (path > ? AND path < ?)"
            args = self._args
        with self._lock:
            out = {row[0] for row in self._db.execute(q, args)}
        if prefix and self._len:
            # The folders above the prefix hold its entries too.
            d = prefix.rpartition("/")[0]
            while d not in out:
                out.add(d)
                d = d.rpartition("/")[0]
            out.add("")
        return out

    def __iter__(self) -> Iterator[ManifestEntry]:
        q = f"{self._COLUMNS} WHERE {self._where} ORDER BY path"
        for row in self._db.execute(q, self._args):
            yield ManifestEntry(*row)

    @overload
    def __getitem__(self, i: int) -> ManifestEntry: ...

    @overload
    def __getitem__(self, i: slice) -> list[ManifestEntry]: ...

    def __getitem__(self, i: int | slice) -> ManifestEntry | list[ManifestEntry]:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._len)
            if step != 1:
                raise ValueError("IndexedEntries slices take no step")
            return self._rows(start, stop) if stop > start else []
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._rows(i, i + 1)[0]

    def _rows(self, start: int, stop: int) -> list[ManifestEntry]:
        with self._lock:
            after = self._after
            if after is not None and after[0] == start:
                q = f"{self._COLUMNS} WHERE {self._where} AND path > ? ORDER BY path LIMIT ?"
                args: tuple[object, ...] = (*self._args, after[1], stop - start)
            else:
                q = f"{self._COLUMNS} WHERE {self._where} ORDER BY path LIMIT ? OFFSET ?"
                args = (*self._args, stop - start, start)
            rows = self._db.execute(q, args).fetchall()
            if rows:
                self._after = (start + len(rows), rows[-1][0])
        return [ManifestEntry(*r) for r in rows]


def _patch(base: Path, tmp: Path, entries: list[ManifestEntry]) -> bool:
    """Write at ``tmp`` the index of ``entries`` from a copy of the index ``base``.

    False (``tmp`` may be left, the caller removes it) when the two differ in
    more than a quarter of their files: a fresh build is then as quick.
    """
    gone: list[str] = []  # paths removed, or modified (their old row goes)
    new: list[ManifestEntry] = []  # entries added, or modified
    totals: dict[str, list[int]] = {}  # folder -> change in (files, bytes)
    limit = max(len(entries) // 4, 1)

    def count(path: str, size: int, sign: int) -> None:
        d = path.rpartition("/")[0]
        while True:
            t = totals.get(d)
            if t is None:
                t = totals[d] = [0, 0]
            t[0] += sign
            t[1] += sign * size
            if not d:
                return
            d = d.rpartition("/")[0]

    src = sqlite3.connect(f"file:{base}?mode=ro", uri=True)
    try:
        it = iter(entries)
        cur = next(it, None)
        for path, digest, size, mode in src.execute(
            "SELECT path, digest, size, mode FROM files ORDER BY path"
        ):
            while cur is not None and cur.path < path:
                new.append(cur)
                count(cur.path, cur.size, 1)
                cur = next(it, None)
            if cur is not None and cur.path == path:
                if (cur.digest, cur.size, cur.mode) != (digest, size, mode):
                    gone.append(path)
                    count(path, size, -1)
                    new.append(cur)
                    count(path, cur.size, 1)
                cur = next(it, None)
            else:
                gone.append(path)
                count(path, size, -1)
            if len(gone) + len(new) > limit:
                return False
        while cur is not None:
            new.append(cur)
            count(cur.path, cur.size, 1)
            cur = next(it, None)
    finally:
        src.close()
    if len(gone) + len(new) > limit:
        return False
    shutil.copyfile(base, tmp)
    db = sqlite3.connect(tmp)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone))
        db.executemany(
            "INSERT INTO files VALUES (?,?,?,?,?,?)",
            (
                (e.path, e.path.rpartition("/")[0], e.path.rpartition("/")[2])
                + (e.digest, e.size, e.mode)
                for e in new
            ),
        )
        for folder, (files, nbytes) in totals.items():
            if not files and not nbytes:
                continue
            row = db.execute("SELECT files FROM dirs WHERE path = ?", (folder,)).fetchone()
            if row is None:
                parent_dir = None if not folder else folder.rpartition("/")[0]
                db.execute(
                    "INSERT INTO dirs VALUES (?,?,?,?,?)",
                    (folder, parent_dir, folder.rpartition("/")[2], files, nbytes),
                )
            elif row[0] + files == 0 and folder:
                db.execute("DELETE FROM dirs WHERE path = ?", (folder,))
            else:
                db.execute(
                    "UPDATE dirs SET files = files + ?, bytes = bytes + ? WHERE path = ?",
                    (files, nbytes, folder),
                )
        db.commit()
    finally:
        db.close()
    return True
