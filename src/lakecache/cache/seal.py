"""Published caches are read-only and durable; a file is checked before another cache links it.

Modes. A cache's files are 0444 (0555 when executable) and its folders 0555.
Caches on one volume share files by hard link, which is one inode: a job that
could write to its cache would change every cache that holds the file, and
nothing would notice until a ``cache verify``. Files get their mode from the
fill as they are written (:func:`~lakecache.data.materialize.write_file`);
folders are sealed here, once the tree is complete. Whoever removes or
repairs a cache opens the folders it changes first (:func:`unseal`,
:func:`opened`); root ignores the modes, a site agent running as a user does
not. A ``data pull`` into a user's folder is not a cache: it stays writable.

Publish order, for a power loss at any point: the fill's files are flushed
(one syncfs for the whole staging tree, not an fsync per file), then one
rename publishes the tree, then the folders are sealed and flushed again,
then the catalog marks the cache ready. A crash before the rename leaves
staging (resumed and re-verified); after it, a published tree whose every
byte is on disk.

The seal record. ``<volume>/.lakecache/sealed/<cache id>`` is an empty file
whose mtime is the volume filesystem's clock when the cache was sealed. No
file of a sealed cache is newer than that unless someone wrote to it since:
which is how a link source is checked (:func:`usable_link_source`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from lakecache.cache.volume import VolumeLayout
from lakecache.durable import makedirs_durable, sync_filesystem
from lakecache.lake.objects import ManifestEntry

log = logging.getLogger("lakecache.cache")

#: A sealed folder: entries can be listed and read, not added, removed or renamed.
SEALED_FOLDER = 0o555
#: A folder being repaired or removed (owner may change its entries).
OPEN_FOLDER = 0o755


class LinkSource(NamedTuple):
    """A file of a ready cache with the bytes a new cache needs, and when its cache was sealed.

    A named tuple: a fill makes one per shared blob (20,000 for a 99%-shared commit of A).
    """

    path: str
    #: mtime (ns) of the source cache's seal record; None: never sealed (older caches).
    sealed_ns: int | None


def seal_record(layout: VolumeLayout, cache_id: int) -> Path:
    return layout.internal / "sealed" / str(int(cache_id))


def sealed_at_ns(layout: VolumeLayout, cache_id: int) -> int | None:
    """When cache ``cache_id`` was sealed, by the volume's clock; None if it never was."""
    try:
        return os.stat(seal_record(layout, cache_id)).st_mtime_ns
    except FileNotFoundError:
        return None


def seal(
    layout: VolumeLayout, cache_id: int, folder: Path, folders: Iterable[str] | None = None
) -> None:
    """Make every folder of a published cache 0555, flush, then write its seal record.

    Idempotent: also finishes a cache whose filler died between publish and seal.
    One chmod per folder (files got their mode when written), then one syncfs
    that also makes the publishing rename durable. ``folders`` (relative, ''
    for ``folder`` itself) are the tree's folders when the caller knows them
    from the manifest: a fill does, and is spared a walk over every file.
    """
    if folders is None:
        paths = [dirpath for dirpath, _, _ in os.walk(folder, topdown=False)]
    else:
        # Deepest first, as the walk: a folder is sealed after everything in it.
        rel = sorted(folders, key=lambda f: -f.count("/") - (f != ""))
        paths = [os.path.join(folder, f) if f else str(folder) for f in rel]
    for path in paths:
        os.chmod(path, SEALED_FOLDER)
    sync_filesystem(folder)
    _touch_record(layout, cache_id)


def folders_of(paths: Iterable[str]) -> set[str]:
    """Every folder that holds one of ``paths`` (relative, '/'-separated), '' included."""
    out = {""}
    for p in paths:
        d = p.rpartition("/")[0]
        while d not in out:
            out.add(d)
            d = d.rpartition("/")[0]
    return out


def _touch_record(layout: VolumeLayout, cache_id: int) -> None:
    record = seal_record(layout, cache_id)
    makedirs_durable(record.parent, under=layout.root)
    with open(record, "ab"):
        pass
    # utime(None) takes the filesystem's own clock (the server's, on NFS): the
    # same clock that stamped the cache's files, whatever this machine's says.
    os.utime(record, None)


def unseal(layout: VolumeLayout, cache_id: int, final: Path) -> None:
    """Before a cache is removed: make its top folder writable, drop its seal record.

    Moving a folder to another parent (eviction renames a cache into trash)
    rewrites its ``..`` entry, which needs write permission on the folder
    itself. The folders inside are opened while they are deleted
    (:meth:`VolumeLayout.remove_tree`).
    """
    with contextlib.suppress(FileNotFoundError):
        os.chmod(final, OPEN_FOLDER)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(seal_record(layout, cache_id))


@contextmanager
def opened(layout: VolumeLayout, cache_id: int, root: Path, paths: Iterable[str]) -> Iterator[None]:
    """Open the folders that hold ``paths`` (and their ancestors) for a repair, then seal again.

    Only those folders change mode; the rest of the cache stays sealed. The
    seal record is renewed after the repair: the repaired files are newer than
    the old seal, and verified (they were written from verified bytes).
    """
    folders = {str(root)}
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add(os.path.join(root, *parts[:i]))
    # Top-down, so that a missing folder's parent is already writable.
    order = sorted(folders, key=lambda f: f.count(os.sep))
    for f in order:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f, OPEN_FOLDER)
    try:
        yield
    finally:
        for f in reversed(order):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f, SEALED_FOLDER)
        sync_filesystem(root)
        _touch_record(layout, cache_id)


def usable_link_source(source: LinkSource, entry: ManifestEntry) -> bool:
    """True if ``source`` may be hard-linked as ``entry``: checked cheaply, or read to be sure.

    The trade-off. Reading every source to hash it would make a fill that links
    most of its files read all their bytes (over NFS, through the network):
    linking would cost as much as a local copy. So a source is trusted on one
    lstat when it is a regular file of the entry's size and exec bit, has no
    write bit, and is no newer than its cache's seal record. Writing to it
    moves its mtime past the seal record (the filesystem stamps both), even
    when root chmods it back afterwards; only a deliberate backdating of the
    mtime (``touch -d``) escapes this, and ``cache verify`` still finds that.
    Anything else (a cache sealed before seal records existed, a writable
    file, a newer mtime) is hashed in full, linked only if it matches, and
    then made read-only: from now on the inode is shared.
    """
    try:
        st = os.lstat(source.path)
    except OSError:
        return False  # vanished or unreachable: the file is downloaded instead
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    if bool(st.st_mode & 0o111) != bool(entry.mode & 0o111):
        return False  # a link shares the mode too
    if (
        not st.st_mode & 0o222
        and source.sealed_ns is not None
        and st.st_mtime_ns <= source.sealed_ns
    ):
        return True
    from lakecache.data.materialize import file_matches, file_mode

    if not file_matches(source.path, entry):
        log.warning(
            "not linking %s: its bytes do not match %s (changed since its cache was sealed); "
            "`lakecache cache verify --repair` repairs that cache",
            source.path,
            entry.digest[:16],
        )
        return False
    perm = file_mode(entry.mode, read_only=True)
    if perm is not None and st.st_mode & 0o777 != perm:
        try:
            os.chmod(source.path, perm)
        except PermissionError:
            return False  # another user's file: sharing it writable is what seals prevent
    return True
