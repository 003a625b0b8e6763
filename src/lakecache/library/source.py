"""Where a component's input files come from: a commit (``xray@v3``) or a local folder.

A flow task is handed its inputs as folders (a ready cache mounted at the
site, or a pulled copy: ``LAKECACHE_INPUT_<NAME>``); a user at a notebook
names a commit. Both are a :class:`Source`: a sorted listing of relative
paths and sizes, and the bytes of one path. A commit is read through
:class:`lakecache.integrations.reader.CommitReader` (its site's ready cache
under a lease when there is one, else the lake's packs); a folder with
``open()``.

A commit's sub-folder is a source too (``xray@v1/prepared``): paths are then
relative to it. With ``commits_of_caches``, a folder inside a ready cache
of a commit (what a flow task is handed for a ``cached`` input) is read as
that commit's sub-folder, so that training code reads it through
``lakecache.torch`` (its own lease, the read reported to tracking) rather
than as anonymous files; when the catalog cannot be reached from here (a
job of a local agent, say) it stays a plain folder.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lakecache.errors import LakecacheError, NotFoundError, UserError
from lakecache.lake.objects import normalize_folder, normalize_path

if TYPE_CHECKING:
    from lakecache.integrations.reader import CommitReader
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.library.source")

#: The URL form of a commit, as the fsspec filesystem spells it.
SCHEME = "lakecache://"
#: The last folder of a published cache: ``<volume>/caches/<dataset>/<commit id>[~<hash>]``
#: (:class:`lakecache.cache.volume.VolumeLayout`).
_CACHE_LEAF = re.compile(r"[0-9a-f]{64}(~[0-9a-f]+)?")


class Source:
    """The files of one input: a sorted listing and each file's bytes."""

    #: How messages name this input (``xray@1a2b3c4d5e6f`` or a folder).
    label: str = ""
    #: The commit read, when the input is a commit.
    commit_id: str | None = None
    #: ``DATASET@REF`` when the input is a commit (what torch datasets are given).
    ref: str | None = None
    #: The commit folder the source is (``""``: the whole commit; else ending in ``/``).
    prefix: str = ""
    #: The folder, when the input is a local folder.
    root: Path | None = None
    #: ``cache``, ``stream`` or ``folder``.
    how: str = "folder"

    def files(self) -> Iterator[tuple[str, int]]:
        """(relative path, size) of every file, sorted by path."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def read(self, path: str) -> bytes:
        """The bytes of ``path``. Raises NotFoundError when there is no such file."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a cache lease)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSource(Source):
    """A local folder (a mounted cache, a pulled commit, a download)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root).resolve()
        self.root = self.path
        self.label = str(root)
        self.how = "folder"

    def files(self) -> Iterator[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.path)
            for name in filenames:
                if name.startswith("."):
                    continue
                path = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                out.append((path, os.stat(os.path.join(dirpath, name)).st_size))
        out.sort()
        yield from out

    def folders(self) -> list[str]:
        """Every sub-folder (relative, sorted), empty ones included: a commit has none."""
        out = []
        for dirpath, dirnames, _ in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.path)
            if rel != ".":
                out.append(rel.replace(os.sep, "/"))
        return sorted(out)

    def _local(self, path: str) -> Path:
        return self.path / normalize_path(path)

    def exists(self, path: str) -> bool:
        return self._local(path).is_file()

    def read(self, path: str) -> bytes:
        try:
            return self._local(path).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self.label} has no file {path!r}") from None


class CommitSource(Source):
    """A commit, or one folder of it, read from the site's ready cache (leased) or the lake."""

    def __init__(
        self,
        ref: str,
        *,
        folder: str = "",
        cached: bool | None = None,
        site: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from lakecache.integrations.reader import CommitReader

        sub = normalize_folder(folder) if folder else ""
        self.prefix = f"{sub}/" if sub else ""
        self.reader: CommitReader = CommitReader(
            ref, paths=[sub] if sub else None, cached=cached, site=site, settings=settings
        )
        try:
            if sub and self.reader.folder_totals(sub) is None:
                raise NotFoundError(
                    f"{self.reader.dataset}@{self.reader.commit_id[:12]} has no folder {sub!r}",
                    hint=f"List it with `lakecache data ls {self.reader.dataset}@"
                    f"{self.reader.commit_id[:12]}`.",
                )
        except BaseException:
            self.reader.close()
            raise
        self.commit_id = self.reader.commit_id
        self.dataset = self.reader.dataset
        # Pinned to the commit: a later `latest` must not change what workers read.
        self.ref = f"{self.dataset}@{self.commit_id}"
        self.label = f"{self.dataset}@{self.commit_id[:12]}" + (f"/{sub}" if sub else "")
        self.how = self.reader.source
        self.cached = cached
        self.site = site
        self.settings = settings

    def files(self) -> Iterator[tuple[str, int]]:
        n = len(self.prefix)
        for e in self.reader.entries([self.prefix] if self.prefix else None):
            yield e.path[n:], e.size

    def exists(self, path: str) -> bool:
        return self.reader.index.get(self.prefix + normalize_path(path)) is not None

    def read(self, path: str) -> bytes:
        return self.reader.read(self.reader.entry(self.prefix + normalize_path(path)))

    def close(self) -> None:
        self.reader.close()


def open_source(
    spec: str | Path,
    *,
    cached: bool | None = None,
    site: str | None = None,
    settings: Settings | None = None,
    commits_of_caches: bool = False,
) -> Source:
    """A :class:`Source` for ``spec``: an existing folder, or ``DATASET@REF[/FOLDER]``.

    ``lakecache://DATASET@REF[/FOLDER]`` is accepted too. ``cached``: for a
    commit, ``None`` reads a ready cache when there is one (else the lake),
    ``True`` insists on one, ``False`` reads the lake. ``commits_of_caches``:
    a folder inside a ready cache of a commit is read as that commit (see the
    module's notes), unless ``cached`` is False.

    Raises:
        UserError: ``spec`` is neither a folder nor a ``DATASET@REF``.
        NotFoundError: the dataset, the ref, a folder of the commit, or
            (``cached=True``) a ready cache.
    """
    text = str(spec)
    if text.startswith(SCHEME):
        text = text[len(SCHEME) :].rstrip("/")
    elif Path(text).is_dir():
        if commits_of_caches and cached is not False:
            found = commit_of_cache_folder(Path(text), settings)
            if found is not None:
                ref, folder = found
                return CommitSource(ref, folder=folder, cached=True, site=site, settings=settings)
        return FolderSource(Path(text))
    if "@" in text and "/" not in text.split("@", 1)[0]:
        ref, _, folder = text.partition("/")
        return CommitSource(ref, folder=folder, cached=cached, site=site, settings=settings)
    if Path(text).exists():
        raise UserError(
            f"{text!r} is a file; a component reads a folder or a commit",
            hint="Pass the folder that holds the dataset, or DATASET@REF (e.g. xray@v1).",
        )
    raise UserError(
        f"{text!r} is neither a folder here nor a commit (DATASET@REF)",
        hint="Pass a folder, or a commit such as xray@v1, xray@latest or lakecache://xray@v1.",
    )


def commit_of_cache_folder(
    folder: Path, settings: Settings | None = None
) -> tuple[str, str] | None:
    """``(DATASET@COMMIT, folder in the commit)`` when ``folder`` is inside a ready cache.

    The cache must be one the catalog of ``settings`` (default: from the
    environment) knows, on a volume this machine mounts. None when it is not
    a cache's folder, or when that catalog is not there or cannot be reached:
    the caller then reads the folder as it is.
    """
    real = folder.resolve()
    parts = real.parts
    at = next(
        (
            i
            for i in range(len(parts) - 3, 0, -1)
            if parts[i] == "caches" and _CACHE_LEAF.fullmatch(parts[i + 2])
        ),
        None,
    )
    if at is None:
        return None
    dataset, commit = parts[at + 1], parts[at + 2].partition("~")[0]
    top = Path(*parts[: at + 3])
    inside = "/".join(parts[at + 3 :])
    try:
        from lakecache.settings import Settings as _Settings

        settings = settings or _Settings.load()
        if not _catalog_here(settings):
            return None
        from lakecache.cache.service import CacheService
        from lakecache.data.hub import Hub

        hub = Hub(settings)
        try:
            svc = CacheService(hub)
            for c in svc.topology.list_caches(dataset=dataset, states=("ready",)):
                if c.commit_id == commit and svc.cache_path(c).resolve() == top:
                    return f"{dataset}@{commit}", inside
        finally:
            hub.close()
    except (LakecacheError, OSError) as exc:
        log.info("%s is read as a folder: its cache could not be looked up (%s)", folder, exc)
    return None


def _catalog_here(settings: Settings) -> bool:
    """True when settings name a catalog that exists (a server, a database, a SQLite file)."""
    if settings.server_url:
        return True
    url = settings.catalog_url
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).is_file()
    return True
