"""The Python SDK for one dataset: ``lakecache.Dataset("xray")``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lakecache.data.hub import Hub
from lakecache.data.index import Change, FolderItem, IndexedEntries, ManifestIndex
from lakecache.errors import UserError
from lakecache.lake.objects import Commit, ManifestEntry, normalize_folder

if TYPE_CHECKING:
    from lakecache.data.commit import CommitStats
    from lakecache.data.progress import Progress
    from lakecache.data.pull import PullStats
    from lakecache.settings import Settings


@dataclass(frozen=True)
class LogEntry:
    id: str
    commit: Commit
    tags: tuple[str, ...] = ()


@dataclass
class Diff:
    """Changes between two commits, and their totals."""

    old: str
    new: str
    changes: list[Change] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(ch.status for ch in self.changes)
        return {k: c.get(k, 0) for k in ("added", "removed", "modified")}

    @property
    def bytes_added(self) -> int:
        return sum((c.new_size or 0) for c in self.changes if c.status != "removed")

    @property
    def bytes_removed(self) -> int:
        return sum((c.old_size or 0) for c in self.changes if c.status != "added")


def split_ref(spec: str) -> tuple[str, str | None]:
    """``"xray@v1"`` -> ("xray", "v1"); ``"xray"`` -> ("xray", None)."""
    name, sep, ref = spec.partition("@")
    if sep and not ref:
        raise UserError(
            f"{spec!r} has an empty ref after '@'",
            hint="Write NAME@TAG, NAME@latest or NAME@<commit prefix>.",
        )
    return name, (ref or None)


class Dataset:
    """A named, versioned collection of files in the lake.

    ``Dataset("xray")`` uses settings from the environment
    (:meth:`lakecache.Settings.load`); pass ``settings=`` or ``hub=`` to choose.
    Methods raise :class:`lakecache.LakecacheError` subclasses with a hint.
    """

    def __init__(
        self, name: str, *, settings: Settings | None = None, hub: Hub | None = None
    ) -> None:
        if hub is None:
            if settings is None:
                from lakecache.settings import Settings

                settings = Settings.load()
            hub = Hub(settings)
        self.name = name
        self.hub = hub
        self.last_commit_stats: CommitStats | None = None

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"

    @classmethod
    def create(
        cls,
        name: str,
        *,
        settings: Settings | None = None,
        hub: Hub | None = None,
        description: str = "",
        exist_ok: bool = False,
    ) -> Dataset:
        """Create the dataset in the catalog (``exist_ok`` makes this idempotent)."""
        ds = cls(name, settings=settings, hub=hub)
        from lakecache.errors import AlreadyExistsError

        try:
            ds.hub.catalog.create_dataset(
                name, owner=ds.hub.settings.author, description=description
            )
        except AlreadyExistsError:
            if not exist_ok:
                raise
        return ds

    # -- writing -----------------------------------------------------------

    def commit(
        self,
        path: str | Path,
        message: str = "",
        *,
        allow_empty: bool = False,
        progress: Progress | None = None,
    ) -> Commit:
        """Commit the folder ``path`` as the new latest version; returns the commit.

        Only files whose size or mtime changed since the last commit from this
        machine are read again, and only blobs the lake lacks are uploaded.
        The author is :attr:`~lakecache.data.hub.Hub.author`: through a server,
        the logged-in user.

        Args:
            path: the folder to commit (its whole tree; symlinks inside it are stored
                as the files they name).
            message: what changed in this version.
            allow_empty: make a new commit even when the folder is exactly the
                latest version. By default nothing is committed then, the latest
                commit is returned and ``last_commit_stats.created`` is False.
            progress: a progress reporter (the CLI passes a bar).

        Returns:
            The new commit (or the unchanged latest one). Statistics of the run are
            in :attr:`last_commit_stats`.

        Raises:
            UserError: ``path`` does not exist or is not a folder.
            SourceError: a file could not be read or kept changing; nothing committed.
            ConflictError: someone else committed first; run it again.

        Example:
            >>> Dataset("xray").commit("./chest-xray", "fix labels")  # doctest: +SKIP
        """
        from lakecache.data.commit import commit_folder

        folder = Path(path)
        if not folder.exists():
            raise UserError(
                f"{str(folder)!r} does not exist",
                hint="Pass the folder that holds the dataset's files.",
            )
        if not folder.is_dir():
            raise UserError(
                f"{str(folder)!r} is a file, not a folder",
                hint="Pass the folder that holds it: a commit takes a whole folder.",
            )
        # The lake's client starts in a thread while the folder is scanned.
        self.hub.open_lake_in_background(writes=True)
        commit, stats = commit_folder(
            lake=lambda: self.hub.lake,
            catalog=self.hub.catalog,
            settings=self.hub.settings.with_(author=self.hub.author),
            dataset=self.name,
            root=folder,
            message=message,
            progress=progress,
            allow_empty=allow_empty,
        )
        self.last_commit_stats = stats
        return commit

    def tag(self, tag: str, ref: str | None = None, *, force: bool = False) -> str:
        """Name a commit (default: latest); returns its id."""
        cid = self.resolve(ref)
        self.hub.catalog.set_tag(self.name, tag, cid, force=force)
        return cid

    # -- reading -----------------------------------------------------------

    def resolve(self, ref: str | None = None) -> str:
        """The full commit id of a tag, ``latest``, or a commit id prefix."""
        return self.hub.catalog.resolve(self.name, ref)

    def get_commit(self, ref: str | None = None) -> Commit:
        return self.hub.catalog.get_commit(self.name, self.resolve(ref))

    def _index(self, ref: str | None) -> ManifestIndex:
        commit = self.get_commit(ref)
        return ManifestIndex.open(
            self.hub.settings.state_dir, commit.manifest, lambda: self.hub.lake
        )

    def ls(
        self,
        ref: str | None = None,
        folder: str = "",
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[FolderItem]:
        """One folder of a commit: sub-folders with totals, then files, each by name.

        With ``limit``, one page of at most that many items, starting after the
        item ``after`` (the last of the previous page, by name as listed or by
        its whole path): a folder
        of 200,000 files reads in pages, each as fast as the first, instead of
        all at once. An empty page means the end.
        """
        sub = normalize_folder(folder)
        with self._index(ref) as idx:
            if limit is None and after is None:
                return idx.ls(sub)
            if limit is not None and limit < 1:
                raise UserError(f"limit must be at least 1, not {limit}")
            key = None
            if after is not None:
                prefix = f"{sub}/" if sub else ""
                mark = normalize_folder(after)
                if "/" not in mark and not (prefix and mark.startswith(prefix)):
                    mark = prefix + mark  # a name as `ls` prints it, not a whole path
                if not mark.startswith(prefix) or "/" in mark[len(prefix) :]:
                    raise UserError(
                        f"{after!r} is not an item of folder {sub or '/'!r}",
                        hint="Pass the path of the last item of the previous page.",
                    )
                key = idx.page_key(mark)
            items, _ = idx.ls_page(sub, limit=limit or 2**31, after=key)
            return items

    def files(self, ref: str | None = None, paths: list[str] | None = None) -> list:  # type: ignore[type-arg]
        """Every manifest entry of a commit (or under ``paths``), in path order."""
        prefixes = [normalize_folder(p) for p in paths] if paths else None
        with self._index(ref) as idx:
            return list(idx.entries(prefixes))

    def diff(self, a: str | None, b: str | None = None) -> Diff:
        """What changed from commit ``a`` to commit ``b`` (default: latest)."""
        ida, idb = self.resolve(a), self.resolve(b)
        with self._index(ida) as ia, self._index(idb) as ib:
            return Diff(ida, idb, list(ia.diff(ib)))

    def log(self, ref: str | None = None, limit: int | None = None) -> list[LogEntry]:
        """The lineage of ``ref`` (default latest), newest first, with tags."""
        cat = self.hub.catalog
        tags = cat.tags(self.name)
        commits = cat.log(self.name, self.resolve(ref) if ref else None, limit)
        return [LogEntry(c.id, c, tuple(tags.get(c.id, ()))) for c in commits]

    def pull(
        self,
        ref: str | None,
        dest: str | Path,
        paths: str | list[str] | None = None,
        *,
        force: bool = False,
        delete: bool = False,
        progress: Progress | None = None,
    ) -> PullStats:
        """Write a commit (or the files and folders in ``paths``) into ``dest``.

        Every file is verified against its BLAKE3 before it appears; files
        already in ``dest`` with the right content are kept, so an interrupted
        pull resumes.

        Args:
            ref: a tag, ``latest`` (None) or a commit id prefix.
            dest: the folder to write into; created if missing.
            paths: one path or a list of files and folders of the commit (None: all).
            force: overwrite files in ``dest`` that hold local changes.
            delete: remove files under the pulled folders that the commit does not hold.
            progress: a progress reporter (the CLI passes a bar).

        Returns:
            :class:`~lakecache.data.pull.PullStats`: files, bytes, requests, and the
            files found in ``dest`` that the commit does not hold (``extra_files``).

        Raises:
            UserError: a file in ``dest`` differs from the commit and was not written
                by an earlier pull (nothing is written; pass ``force=True``).
            IntegrityError: bytes in the lake disagree with their digest.

        Example:
            >>> Dataset("xray").pull("v1", "./xray", paths="train/NORMAL/")  # doctest: +SKIP
        """
        if isinstance(paths, str):
            paths = [paths]
        prefixes = [normalize_folder(p) for p in paths] if paths else None
        if prefixes is not None and "" in prefixes:
            prefixes = None  # the root covers everything
        # The lake's client starts in a thread while the index is read and the folder checked.
        self.hub.open_lake_in_background()
        with self._index(ref) as idx:
            if prefixes is not None and len(prefixes) > 1:
                entries: Sequence[ManifestEntry] = list(idx.entries(prefixes))
            else:
                # Read from the index batch by batch, never listed whole: memory stays
                # flat in the number of files (a list of B's 627,615 is ~150 MiB).
                seq = idx.sequence(prefixes[0] if prefixes else "")
                if prefixes and not seq:
                    seq.close()
                    list(idx.entries(prefixes))  # raises NotFoundError, naming the path
                entries = seq
        try:
            return self._pull_entries(entries, ref, Path(dest), prefixes, force, delete, progress)
        finally:
            if isinstance(entries, IndexedEntries):
                entries.close()

    def _pull_entries(
        self,
        entries: Sequence[ManifestEntry],
        ref: str | None,
        dest: Path,
        prefixes: list[str] | None,
        force: bool,
        delete: bool,
        progress: Progress | None,
    ) -> PullStats:
        from dataclasses import asdict

        from lakecache.data.materialize import materialize
        from lakecache.data.pull import (
            PullConflictError,
            PullRecord,
            PullStats,
            check_dest,
            delete_extras,
        )

        spec = f"{self.name}@{ref or 'latest'}"
        s = self.hub.settings
        with PullRecord(s.state_dir / "pulls.db") as record:
            check = check_dest(entries, dest, record, folders=prefixes)
            if check.conflicts and not force:
                raise PullConflictError(check, spec, dest, flag="force=True")
            stats = materialize(
                # materialize takes len(), iteration and slices: what IndexedEntries reads lazily.
                cast("list[ManifestEntry]", entries),
                dest,
                lake=self.hub.lake,
                catalog=self.hub.catalog,
                workers=s.workers,
                chunk_size=s.part_size,
                progress=progress,
            )
            record.remember(os.path.realpath(dest), entries)
            out = PullStats(
                **asdict(stats),
                overwritten_files=len(check.conflicts),
                extra_files=check.extra_files,
                extra_shown=check.extra_shown,
            )
            if delete and check.extra_files:
                out.deleted_files = delete_extras(entries, dest, record, folders=prefixes)
                out.extra_files -= out.deleted_files
        return out
