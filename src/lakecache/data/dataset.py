"""The Python SDK for one dataset: ``lakecache.Dataset("xray")``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakecache.data.hub import Hub
from lakecache.data.index import Change, FolderItem, ManifestIndex
from lakecache.errors import UserError
from lakecache.lake.objects import Commit, normalize_folder, normalize_path

if TYPE_CHECKING:
    from lakecache.data.commit import CommitStats
    from lakecache.data.materialize import MaterializeStats
    from lakecache.data.progress import Progress
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
        self, path: str | Path, message: str = "", *, progress: Progress | None = None
    ) -> Commit:
        """Commit the folder ``path`` as the new latest version; returns the commit.

        Only files whose size or mtime changed since the last commit from this
        machine are read again, and only blobs the lake lacks are uploaded.
        Statistics of the run are left in :attr:`last_commit_stats`. The author
        is :attr:`~lakecache.data.hub.Hub.author`: through a server, the logged-in user.
        """
        from lakecache.data.commit import commit_folder

        commit, stats = commit_folder(
            lake=self.hub.lake,
            catalog=self.hub.catalog,
            settings=self.hub.settings.with_(author=self.hub.author),
            dataset=self.name,
            root=path,
            message=message,
            progress=progress,
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
        item whose path is ``after`` (the last of the previous page): a folder
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
        paths: list[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> MaterializeStats:
        """Write a commit (or the files and folders in ``paths``) into ``dest``.

        Every file is verified against its BLAKE3 before it appears; files
        already in ``dest`` with the right content are kept, so an interrupted
        pull resumes.
        """
        from lakecache.data.materialize import materialize

        prefixes = [normalize_path(p.strip("/")) for p in paths] if paths else None
        with self._index(ref) as idx:
            entries = list(idx.entries(prefixes))
        s = self.hub.settings
        return materialize(
            entries,
            Path(dest),
            lake=self.hub.lake,
            catalog=self.hub.catalog,
            workers=s.workers,
            chunk_size=s.part_size,
            progress=progress,
        )
