"""The layout of a cache volume, and its free space.

::

    <root>/caches/<dataset>/<commit id>[~<path hash>]/   published caches (plain files)
    <root>/.lakecache/staging/<cache id>-<fence token>/   fills in progress, one per claim
    <root>/.lakecache/trash/<cache id>-<random>/          caches being evicted
    <root>/.lakecache/sealed/<cache id>                   when a cache was sealed read-only

A fill writes into staging on the same filesystem, then publishes with one
``rename``: readers see the whole commit or nothing. Each claim of a fill has
its own staging folder, named by its fence token, so two fillers never write
the same file: a filler that takes over renames the older claim's folder to its
own (the old one, if it wakes up, finds its folder gone) and a publish never
replaces a folder that is already there (``rename`` onto a non-empty folder
fails). Eviction renames the cache into trash first (it disappears at once),
then deletes it at leisure. Every path is built from validated names (dataset name, hex commit id,
integer cache id), never from a manifest, so nothing escapes the root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lakecache.errors import InvalidPathError


def volume_free_bytes(root: str | Path) -> int | None:
    """Bytes free for caches at ``root``, or None where this machine does not mount it.

    Never creates the folder: listing volumes from a laptop must not make empty
    mount points for other sites' volumes.
    """
    if not os.path.isdir(root):
        return None
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True)
class VolumeLayout:
    root: Path

    @property
    def internal(self) -> Path:
        return self.root / ".lakecache"

    def cache_dir(self, dataset: str, commit_id: str, subpath: str = "") -> Path:
        if (
            not all(c in "0123456789abcdef" for c in commit_id)
            or "/" in dataset
            or dataset in (".", "..")
        ):
            raise InvalidPathError(f"bad cache name {dataset}@{commit_id}")
        leaf = commit_id
        if subpath:
            leaf += "~" + hashlib.blake2b(subpath.encode(), digest_size=4).hexdigest()
        return self.root / "caches" / dataset / leaf

    def staging_dir(self, cache_id: int, token: int) -> Path:
        """The staging folder of one claim (fence ``token``) of a cache's fill."""
        return self.internal / "staging" / f"{int(cache_id)}-{int(token)}"

    def staging_dirs(self, cache_id: int, *, older_than: int | None = None) -> list[Path]:
        """The staging folders of a cache, newest claim first; with ``older_than``,
        only those of claims before that token (a worker touches no newer claim's).

        A folder named by the cache id alone was left by a version before fence
        tokens; it counts as token 0.
        """
        parent = self.internal / "staging"
        found: list[tuple[int, Path]] = []
        prefix = f"{int(cache_id)}-"
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            return []
        for name in names:
            if name == str(int(cache_id)):
                token = 0
            elif name.startswith(prefix) and name[len(prefix) :].isdigit():
                token = int(name[len(prefix) :])
            else:
                continue
            if older_than is None or token < older_than:
                found.append((token, parent / name))
        return [p for _, p in sorted(found, reverse=True)]

    def trash_dir(self, cache_id: int) -> Path:
        return self.internal / "trash" / f"{int(cache_id)}-{os.urandom(4).hex()}"

    def remove_tree(self, path: Path) -> None:
        """Delete a folder under this volume; refuses anything outside the root."""
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        if not real.startswith(root + os.sep):
            raise InvalidPathError(f"refusing to delete {path}: outside the volume root {root}")
        if sys.version_info >= (3, 12):
            shutil.rmtree(real, onexc=_open_and_retry)
        else:
            shutil.rmtree(real, onerror=lambda func, p, info: _open_and_retry(func, p, info[1]))


def _open_and_retry(func: Callable[..., object], path: str, exc: BaseException) -> None:
    """rmtree's error handler: a sealed (0555) cache folder is made writable, then retried.

    A published cache's folders are read-only so that jobs cannot change them;
    their entries can be removed only once the folder holding them is writable
    again (root ignores the mode; a site agent running as a user does not).
    Other failures are ignored, as before: a file that vanished, or one this
    process may not remove, must not stop an eviction halfway.
    """
    if not isinstance(exc, PermissionError) or func not in (os.unlink, os.rmdir, os.remove):
        return
    try:
        os.chmod(os.path.dirname(path), 0o755)
        func(path)
    except OSError:
        return
