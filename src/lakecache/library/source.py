"""Where a component's input files come from: a commit (``xray@v3``) or a local folder.

A flow task is handed its inputs as folders (a ready cache mounted at the
site, or a pulled copy: ``LAKECACHE_INPUT_<NAME>``); a user at a notebook
names a commit. Both are a :class:`Source`: a sorted listing of relative
paths and sizes, and the bytes of one path. A commit is read through
:class:`lakecache.integrations.reader.CommitReader` (its site's ready cache
under a lease when there is one, else the lake's packs); a folder with
``open()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lakecache.errors import NotFoundError, UserError
from lakecache.lake.objects import normalize_path

if TYPE_CHECKING:
    from lakecache.integrations.reader import CommitReader
    from lakecache.settings import Settings

#: The URL form of a commit, as the fsspec filesystem spells it.
SCHEME = "lakecache://"


class Source:
    """The files of one input: a sorted listing and each file's bytes."""

    #: How messages name this input (``xray@1a2b3c4d5e6f`` or a folder).
    label: str = ""
    #: The commit read, when the input is a commit.
    commit_id: str | None = None
    #: ``DATASET@REF`` when the input is a commit (what torch datasets are given).
    ref: str | None = None
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
    """A commit, read from the site's ready cache (leased) or the lake."""

    def __init__(
        self,
        ref: str,
        *,
        cached: bool | None = None,
        site: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from lakecache.integrations.reader import CommitReader

        self.reader: CommitReader = CommitReader(ref, cached=cached, site=site, settings=settings)
        self.commit_id = self.reader.commit_id
        self.dataset = self.reader.dataset
        # Pinned to the commit: a later `latest` must not change what workers read.
        self.ref = f"{self.dataset}@{self.commit_id}"
        self.label = f"{self.dataset}@{self.commit_id[:12]}"
        self.how = self.reader.source
        self.cached = cached
        self.site = site
        self.settings = settings

    def files(self) -> Iterator[tuple[str, int]]:
        for e in self.reader.entries():
            yield e.path, e.size

    def exists(self, path: str) -> bool:
        return self.reader.index.get(normalize_path(path)) is not None

    def read(self, path: str) -> bytes:
        return self.reader.read(self.reader.entry(normalize_path(path)))

    def close(self) -> None:
        self.reader.close()


def open_source(
    spec: str | Path,
    *,
    cached: bool | None = None,
    site: str | None = None,
    settings: Settings | None = None,
) -> Source:
    """A :class:`Source` for ``spec``: an existing folder, or ``DATASET@REF``.

    ``lakecache://DATASET@REF`` is accepted too. ``cached``: for a commit,
    ``None`` reads a ready cache when there is one (else the lake), ``True``
    insists on one, ``False`` reads the lake.

    Raises:
        UserError: ``spec`` is neither a folder nor a ``DATASET@REF``.
        NotFoundError: the dataset, the ref, or (``cached=True``) a ready cache.
    """
    text = str(spec)
    if text.startswith(SCHEME):
        text = text[len(SCHEME) :].rstrip("/")
    elif Path(text).is_dir():
        return FolderSource(Path(text))
    if "@" in text and "/" not in text.split("@", 1)[0]:
        return CommitSource(text, cached=cached, site=site, settings=settings)
    if Path(text).exists():
        raise UserError(
            f"{text!r} is a file; a component reads a folder or a commit",
            hint="Pass the folder that holds the dataset, or DATASET@REF (e.g. xray@v1).",
        )
    raise UserError(
        f"{text!r} is neither a folder here nor a commit (DATASET@REF)",
        hint="Pass a folder, or a commit such as xray@v1, xray@latest or lakecache://xray@v1.",
    )
