"""A lake in a local folder: the embedded default, and a reference for the contract.

Writes go to a temporary file in the same folder, are fsynced, and are renamed
into place (then the folder is fsynced), so a crash or a power loss leaves
either the old state or the whole new object, never a half.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from lakecache.durable import fsync_dir, makedirs_durable
from lakecache.errors import LakeError, ObjectNotFoundError
from lakecache.lake.base import ObjectInfo, local_path


class LocalLake:
    """Objects as files under one root folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalLake({self.url!r})"

    def _write(self, key: str, writer: Callable[[BinaryIO], object]) -> None:
        path = local_path(self.root, key)
        makedirs_durable(path.parent, under=self.root)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                writer(out)
                out.flush()
                # Bytes on disk before the name: a power loss must not leave a torn
                # object under its real key, which nothing would ever write again.
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename is an entry in the folder: durable only once the folder is.
        # One fsync per object is cheap next to its bytes (packs are tens of MiB).
        fsync_dir(path.parent)

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, fileobj: BinaryIO, size: int) -> None:
        def copy(out: BinaryIO) -> None:
            remaining = size
            while remaining > 0:
                chunk = fileobj.read(min(remaining, 8 << 20))
                if not chunk:
                    raise LakeError(f"source ended {remaining} bytes early while writing {key}")
                out.write(chunk)
                remaining -= len(chunk)

        self._write(key, copy)

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(local_path(self.root, key), "rb")  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"object {key} not found in lake {self.url}") from None

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        with self._open(key) as f:
            if start:
                f.seek(start)
            data = f.read() if length is None else f.read(length)
        if length is not None and len(data) != length:
            raise ObjectNotFoundError(
                f"object {key} in lake {self.url} is shorter than expected "
                f"(wanted {length} bytes at {start}, got {len(data)})"
            )
        return data

    def get_into(self, key: str, start: int, buf: memoryview) -> None:
        """Read ``len(buf)`` bytes from ``start`` straight into ``buf``."""
        with self._open(key) as f:
            got = 0
            while got < len(buf):
                n = os.preadv(f.fileno(), [buf[got:]], start + got)
                if not n:
                    raise ObjectNotFoundError(
                        f"object {key} in lake {self.url} is shorter than expected "
                        f"(wanted {len(buf)} bytes at {start}, got {got})"
                    )
                got += n

    def iter_chunks(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        with self._open(key) as f:
            f.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                n = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = f.read(n)
                if not chunk:
                    if remaining:
                        raise ObjectNotFoundError(f"object {key} in lake {self.url} is truncated")
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def exists(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if local_path(self.root, k).is_file()}

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        out: list[ObjectInfo] = []
        base = self.root
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            # Prune folders that cannot hold keys with this prefix.
            dirnames[:] = [
                d
                for d in dirnames
                if (rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/")
            ]
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = rel + name
                if key.startswith(prefix):
                    st = os.stat(os.path.join(dirpath, name))
                    modified = datetime.fromtimestamp(st.st_mtime, UTC)
                    out.append(ObjectInfo(key, st.st_size, modified))
        out.sort(key=lambda o: o.key)
        yield from out

    def abort_stale_uploads(self, older_than: timedelta) -> int:
        """Remove temporary files of writes killed midway (by age of last write)."""
        cutoff = time.time() - older_than.total_seconds()
        dropped = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(".tmp-"):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        dropped += 1
        return dropped

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local_path(self.root, key))
