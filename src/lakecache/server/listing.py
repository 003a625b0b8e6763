"""Pages of one folder of a commit, by keyset: the thousandth page costs what the first does.

Reads the local manifest index (:class:`lakecache.data.index.ManifestIndex`,
its ``dirs`` and ``files`` tables) with ``name > :after ... LIMIT``, where
``ManifestIndex.ls`` returns the whole folder: a folder of 40,000 files is
then 40,000 objects per request, too slow for a page of 100.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakecache.errors import NotFoundError

if TYPE_CHECKING:
    from lakecache.data.index import ManifestIndex


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    is_dir: bool
    size: int
    files: int
    digest: str | None


def content_type(name: str) -> str | None:
    """The media type a file name suggests (image/png, image/jpeg, ...), or None."""
    return mimetypes.guess_type(name, strict=False)[0]


def folder_totals(idx: ManifestIndex, folder: str) -> tuple[int, int] | None:
    """(files, bytes) under ``folder`` ('' for the root), or None if it is not a folder."""
    row = idx._db.execute("SELECT files, bytes FROM dirs WHERE path = ?", (folder,)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def list_folder(
    idx: ManifestIndex, folder: str, *, limit: int, after: tuple[str, str] | None
) -> tuple[list[Entry], tuple[str, str] | None]:
    """Up to ``limit`` entries of ``folder``: sub-folders first, then files, each by name.

    ``after`` is the (kind 'd' or 'f', name) of the last entry of the previous
    page; returns the entries and the key to continue after (None at the end).
    NotFoundError if ``folder`` is neither a folder nor a file of the commit; a
    file gives a one-entry listing of itself.
    """
    db = idx._db
    if folder_totals(idx, folder) is None:
        entry = idx.get(folder)
        if entry is None:
            raise NotFoundError(
                f"no folder or file {folder!r} in this commit",
                hint="List the parent folder to see what is there.",
            )
        name = folder.rpartition("/")[2]
        return [Entry(name, entry.path, False, entry.size, 1, entry.digest)], None
    out: list[Entry] = []
    want = limit + 1  # one more than the page says whether another page follows
    kind, last = after if after is not None else ("d", None)
    if kind == "d":
        q = "SELECT name, path, files, bytes FROM dirs WHERE parent = ?"
        args: tuple[object, ...] = (folder,)
        if last is not None:
            q += " AND name > ?"
            args += (last,)
        rows = db.execute(q + " ORDER BY name LIMIT ?", (*args, want)).fetchall()
        out += [Entry(n, p, True, b, c, None) for n, p, c, b in rows]
        last = None
    if len(out) < want:
        q = "SELECT name, path, size, digest FROM files WHERE dir = ?"
        args = (folder,)
        if last is not None:
            q += " AND name > ?"
            args += (last,)
        rows = db.execute(q + " ORDER BY name LIMIT ?", (*args, want - len(out))).fetchall()
        out += [Entry(n, p, False, s, 1, d) for n, p, s, d in rows]
    if len(out) <= limit:
        return out, None
    page = out[:limit]
    tail = page[-1]
    return page, ("d" if tail.is_dir else "f", tail.name)
