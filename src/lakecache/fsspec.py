"""``lakecache://DATASET@REF/path``: a commit as a read-only fsspec filesystem.

Registered by entry point (``fsspec.specs``), so once lakecache is installed::

    import fsspec, pandas, PIL.Image

    with fsspec.open("lakecache://xray@v3/labels.csv") as f:
        labels = pandas.read_csv(f)
    labels = pandas.read_csv("lakecache://xray@v3/labels.csv")
    img = PIL.Image.open(fsspec.open("lakecache://xray@v3/Edema/00001.png").open())

The first component of a path names a commit (``xray@v3``, ``xray@latest``,
``xray@<commit prefix>``; ``xray`` alone is ``xray@latest``), the rest a file
or folder in it. ``ls``, ``info``, ``find`` and ``exists`` read the commit's
manifest index: no object-store listing is ever made. Bytes come from a ready
cache of the commit on a volume this machine mounts (leased while the
filesystem holds the commit), else from the lake's packs with ranged GETs,
neighbouring files merged (``cat`` of many paths, ``cat_ranges``), every
blob's BLAKE3 checked before its bytes are returned.

A ref is resolved once per filesystem instance: ``xray@latest`` keeps naming
the same commit until :meth:`LakecacheFileSystem.invalidate_cache`. Storage
options: ``site`` (look for a cache only there), ``cached`` (None: the cache
if ready, else the lake; True: a cache or an error; False: the lake) and
``settings`` (a :class:`lakecache.Settings`; default
:meth:`~lakecache.Settings.load`).

This module is named after the package it plugs into, so it imports only
absolutely (``import fsspec`` is the real fsspec).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from lakecache.errors import NotFoundError, UserError
from lakecache.integrations.reader import READ_AHEAD_FILES, SPILL_OVER, CommitReader
from lakecache.lake.objects import ManifestEntry, normalize_folder

if TYPE_CHECKING:
    from lakecache.settings import Settings

__all__ = ["LakecacheFileSystem", "PathNotFoundError"]

PROTOCOL = "lakecache"


class PathNotFoundError(NotFoundError, FileNotFoundError):
    """No such file or folder in the commit: a lakecache error that fsspec callers
    (``exists``, pandas, ``fsspec.open``) recognise as FileNotFoundError."""

    default_hint = "List the folder with `lakecache data ls DATASET@REF FOLDER`."


def _read_only(path: str) -> UserError:
    return UserError(
        f"lakecache://{path}: a commit is read-only",
        hint="Write the files to a folder and commit it with `lakecache data commit`.",
    )


class LakecacheFileSystem(AbstractFileSystem):
    """A read-only fsspec filesystem over lakecache commits (protocol ``lakecache``).

    Thread-safe: one reader per commit, shared by every thread. Close it (or
    let it be collected) to release the leases on the caches it reads.
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(
        self,
        *,
        site: str | None = None,
        cached: bool | None = None,
        settings: Settings | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(site=site, cached=cached, settings=settings, **storage_options)
        self.site = site
        self.cached = cached
        self.settings = settings
        self._readers: dict[str, CommitReader] = {}
        self._readers_lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(PROTOCOL + "://"):
            path = path[len(PROTOCOL) + 3 :]
        elif path.startswith(PROTOCOL + "::"):
            path = path[len(PROTOCOL) + 2 :]
        return path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{name}"

    def _split(self, path: str) -> tuple[CommitReader, str, str]:
        """(the commit's reader, the commit as written in the path, the path inside it)."""
        path = self._strip_protocol(path)
        spec, _, inner = path.partition("/")
        if not spec:
            raise UserError(
                "a lakecache path names a commit first: lakecache://DATASET@REF/path",
                hint="For example lakecache://xray@v3/train/ or lakecache://xray@latest/.",
            )
        return self.reader(spec), spec, normalize_folder(inner)

    def reader(self, spec: str) -> CommitReader:
        """The reader of commit ``spec`` (``xray@v3``), opened on first use and kept."""
        with self._readers_lock:
            reader = self._readers.get(spec)
            if reader is None:
                reader = CommitReader(
                    spec if "@" in spec else spec + "@latest",
                    site=self.site,
                    cached=self.cached,
                    settings=self.settings,
                    read_ahead=READ_AHEAD_FILES,
                )
                files, nbytes = reader.folder_totals("") or (0, 0)
                reader.record(files, nbytes, reader="fsspec")
                self._readers[spec] = reader
            return reader

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget resolved refs (all, or the commit of ``path``): ``@latest`` is looked up again."""
        with self._readers_lock:
            if path is None:
                readers = list(self._readers.values())
                self._readers.clear()
            else:
                spec = self._strip_protocol(path).partition("/")[0]
                one = self._readers.pop(spec, None)
                readers = [one] if one is not None else []
        for reader in readers:
            reader.close()

    def close(self) -> None:
        """Release every lease and connection; the filesystem reopens commits when used again."""
        self.invalidate_cache()

    # -- listings --------------------------------------------------------------------------

    def _file_info(self, spec: str, entry: ManifestEntry) -> dict[str, Any]:
        return {
            "name": f"{spec}/{entry.path}",
            "size": entry.size,
            "type": "file",
            "digest": entry.digest,
            "mode": entry.mode,
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """One folder of a commit: sub-folders (``size``: their bytes, ``files``), then files."""
        reader, spec, inner = self._split(path)
        try:
            items = reader.ls(inner)
        except NotFoundError as exc:
            raise PathNotFoundError(f"lakecache://{spec}/{inner}: {exc.message}") from exc
        out: list[dict[str, Any]] = []
        for it in items:
            name = f"{spec}/{it.path}"
            if it.is_dir:
                out.append({"name": name, "size": it.size, "type": "directory", "files": it.files})
            else:
                out.append({"name": name, "size": it.size, "type": "file", "digest": it.digest})
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """A file's size, digest and mode, or a folder's total bytes and files."""
        reader, spec, inner = self._split(path)
        totals = reader.folder_totals(inner)
        if totals is not None:
            name = f"{spec}/{inner}" if inner else spec
            return {"name": name, "size": totals[1], "type": "directory", "files": totals[0]}
        entry = reader.index.get(inner)
        if entry is None:
            raise PathNotFoundError(f"no file or folder lakecache://{spec}/{inner}")
        return self._file_info(spec, entry)

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file under ``path``: one range query in the manifest, not a walk."""
        if maxdepth is not None or withdirs:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        reader, spec, inner = self._split(path)
        try:
            found = {
                f"{spec}/{e.path}": self._file_info(spec, e)
                for e in reader.entries([inner] if inner else None)
            }
        except NotFoundError:
            found = {}
        return found if detail else sorted(found)

    def ukey(self, path: str) -> str:
        """The file's BLAKE3 digest: changes exactly when its bytes do."""
        return str(self._entry(path)[1].digest)

    def checksum(self, path: str) -> int:
        return int(self.ukey(path)[:16], 16)

    def _entry(self, path: str) -> tuple[CommitReader, ManifestEntry]:
        reader, spec, inner = self._split(path)
        entry = reader.index.get(inner) if inner else None
        if entry is None:
            if inner and reader.folder_totals(inner) is not None:
                raise IsADirectoryError(f"lakecache://{spec}/{inner} is a folder")
            raise PathNotFoundError(f"no file lakecache://{spec}/{inner}")
        return reader, entry

    # -- bytes -----------------------------------------------------------------------------

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """A file's bytes, or bytes ``[start, end)`` of it (negative: from the end)."""
        reader, entry = self._entry(path)
        if start is None and end is None:
            return reader.read(entry)
        lo, hi = _bounds(entry.size, start, end)
        return reader.read_range(entry, lo, hi)

    def cat(
        self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> Any:
        """Bytes of one file, or a dict of many: from the lake, neighbours in one GET each."""
        paths = self.expand_path(path, recursive=recursive)
        if recursive:
            # An expansion names the folders too; their files are in it already.
            paths = [p for p in paths if not self._is_folder(p)]
        if len(paths) == 1 and not (
            isinstance(path, list) or recursive or self._strip_protocol(path) != paths[0]
        ):
            return self.cat_file(paths[0])
        return self._cat_many(paths, on_error)

    def _is_folder(self, path: str) -> bool:
        reader, _, inner = self._split(path)
        return reader.folder_totals(inner) is not None

    def _cat_many(self, paths: Iterable[str], on_error: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        by_reader: dict[int, tuple[CommitReader, list[tuple[str, ManifestEntry]]]] = {}
        for p in paths:
            try:
                reader, entry = self._entry(p)
            except (FileNotFoundError, IsADirectoryError) as exc:
                if on_error == "raise":
                    raise
                if on_error == "return":
                    out[p] = exc
                continue
            by_reader.setdefault(id(reader), (reader, []))[1].append((p, entry))
        for reader, wanted in by_reader.values():
            names: dict[str, list[str]] = {}
            for p, e in wanted:
                names.setdefault(e.path, []).append(p)
            entries = sorted({e.path: e for _, e in wanted}.values(), key=lambda e: e.path)
            for e, data in reader.read_many(entries):
                for p in names[e.path]:
                    out[p] = data
        return out

    def cat_ranges(
        self,
        paths: list[str],
        starts: list[int] | int,
        ends: list[int] | int,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Ranges of many files: small files fetched whole, neighbours merged, then cut."""
        n = len(paths)
        starts_ = starts if isinstance(starts, list) else [starts] * n
        ends_ = ends if isinstance(ends, list) else [ends] * n
        if len(starts_) != n or len(ends_) != n:
            raise UserError(
                "cat_ranges needs as many starts and ends as paths",
                hint="Pass one start and one end per path, or a single int for all.",
            )
        small = [p for p in paths if self._is_small(p)]
        whole = self._cat_many(small, "return") if small else {}
        out: list[Any] = []
        for p, start, end in zip(paths, starts_, ends_, strict=True):
            try:
                if p in whole:
                    data = whole[p]
                    if isinstance(data, Exception):
                        raise data
                    lo, hi = _bounds(len(data), start, end)
                    out.append(data[lo:hi])
                else:
                    out.append(self.cat_file(p, start, end))
            except (FileNotFoundError, IsADirectoryError) as exc:
                if on_error == "raise":
                    raise
                out.append(exc)
        return out

    def _is_small(self, path: str) -> bool:
        try:
            return bool(self._entry(path)[1].size <= SPILL_OVER)
        except (FileNotFoundError, IsADirectoryError):
            return True  # reported in order by _cat_many

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if mode != "rb":
            raise _read_only(self._strip_protocol(path))
        reader, entry = self._entry(path)
        local = reader.local_path(entry)
        if local is not None:
            # A cache's file is a plain verified file: give the caller the real thing.
            try:
                return open(local, "rb")  # noqa: SIM115 - the caller closes it
            except FileNotFoundError as exc:
                raise reader.cache_lost(entry) from exc
        return LakecacheFile(self, path, reader, entry, block_size=block_size)

    # -- a read-only filesystem ------------------------------------------------------------

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        raise _read_only(self._strip_protocol(path))

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        raise _read_only(self._strip_protocol(rpath))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise _read_only(self._strip_protocol(path2))

    def rm_file(self, path: str) -> None:
        raise _read_only(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        raise _read_only(self._strip_protocol(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        raise _read_only(str(self._strip_protocol(path)))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise _read_only(self._strip_protocol(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise _read_only(self._strip_protocol(path))

    def rmdir(self, path: str) -> None:
        raise _read_only(self._strip_protocol(path))

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        raise _read_only(self._strip_protocol(path))


class LakecacheFile(AbstractBufferedFile):
    """A file read from the lake: its blob fetched whole and verified on first read."""

    def __init__(
        self,
        fs: LakecacheFileSystem,
        path: str,
        reader: CommitReader,
        entry: ManifestEntry,
        *,
        block_size: int | None = None,
    ) -> None:
        self.reader = reader
        self.entry = entry
        # No block cache: the reader keeps the verified blob, so every range is a slice.
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size or "default",
            cache_type="none",
            size=entry.size,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.reader.read_range(self.entry, start, end)


def _bounds(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """fsspec's range convention: None is the edge, negative counts from the end."""
    lo = 0 if start is None else (size + start if start < 0 else start)
    hi = size if end is None else (size + end if end < 0 else end)
    return max(0, min(lo, size)), max(0, min(hi, size))
