"""Walk a folder into the list of files a commit will hold.

Rules, each checked here so that nothing bad reaches the lake:
- names must be valid UTF-8 and cannot contain a backslash (the manifest's
  paths are portable, '/'-separated);
- a symlink that resolves inside the tree is stored as what it points to
  (a file's bytes, or a folder's files); one that leaves the tree, or dangles,
  stops the scan with its name;
- sockets, FIFOs and devices stop the scan with their name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from lakecache.errors import InvalidPathError, SourceError, UserError


class SourceFile(NamedTuple):
    """A regular file found by the scan: where it is and what its stat said.

    A named tuple, not a frozen dataclass: as immutable, and about three times
    quicker to make (a frozen dataclass sets each field through
    ``object.__setattr__``), which a scan of 627,615 files does once each.
    """

    path: str  # dataset-relative, normalised
    root: str  # the scanned folder, shared by every file (no per-file absolute path kept)
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    mode: int  # 0o755 if executable else 0o644

    @property
    def abspath(self) -> str:
        return self.root + "/" + self.path


def _file_mode(st: os.stat_result) -> int:
    return 0o755 if st.st_mode & 0o111 else 0o644


def scan_folder(root: Path | str) -> list[SourceFile]:
    """Return every file under ``root``, sorted by path (UTF-8 byte order).

    Raises :class:`SourceError` for a missing root, an unreadable folder, a
    symlink leaving the tree or a special file, and :class:`InvalidPathError`
    for a name the manifest cannot hold.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise UserError(f"{root} is not a folder", hint="Give the path of the folder to commit.")
    root_path = Path(os.path.abspath(root_path))
    root_str = str(root_path)
    real_root = os.path.realpath(root_path)
    out: list[SourceFile] = []
    # Stack of (abs folder, rel prefix, realpaths on the way down) to detect symlink loops.
    stack: list[tuple[str, str, frozenset[str]]] = [(str(root_path), "", frozenset({real_root}))]
    while stack:
        folder, prefix, seen = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError as exc:
            raise SourceError(
                f"cannot read folder {os.path.join(folder)}: {exc.strerror}",
                hint="Fix its permissions, or move it out of the dataset folder.",
            ) from exc
        with it:
            for de in it:
                name = de.name
                if "\\" in name or not name.isascii():  # the common name needs no more
                    _check_name(name, prefix)
                rel = prefix + name
                abspath = de.path
                if de.is_symlink():
                    target = os.path.realpath(abspath)
                    if not (target == real_root or target.startswith(real_root + os.sep)):
                        raise SourceError(
                            f"symlink {rel!r} points outside the dataset folder (to {target})",
                            hint="Replace it with a copy of the file, or remove it.",
                        )
                    try:
                        st = os.stat(abspath)
                    except OSError:
                        raise SourceError(
                            f"symlink {rel!r} is dangling", hint="Remove it or fix its target."
                        ) from None
                    if stat.S_ISDIR(st.st_mode):
                        if target in seen:
                            raise SourceError(
                                f"symlink {rel!r} makes a loop", hint="Remove the symlink."
                            )
                        stack.append((abspath, rel + "/", seen | {target}))
                        continue
                else:
                    try:
                        st = de.stat(follow_symlinks=False)
                    except OSError as exc:
                        raise SourceError(f"cannot stat {rel!r}: {exc.strerror}") from exc
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((abspath, rel + "/", seen | {os.path.realpath(abspath)}))
                        continue
                if not stat.S_ISREG(st.st_mode):
                    raise SourceError(
                        f"{rel!r} is not a regular file (socket, FIFO or device)",
                        hint="Move it out of the dataset folder.",
                    )
                out.append(
                    SourceFile(
                        rel,
                        root_str,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        _file_mode(st),
                    )
                )
    # Code point order is UTF-8 byte order, the manifest's order (and SQLite's BINARY).
    out.sort(key=lambda f: f.path)
    return out


def _check_name(name: str, prefix: str) -> str:
    # scandir never yields '', '.', '..', a '/' or a NUL, so a single name only
    # needs the two rules the manifest adds: valid UTF-8, no backslash.
    if "\\" in name or not (name.isascii() or _utf8(name)):
        shown = (prefix + name).encode("utf-8", "backslashreplace").decode()
        if "\\" in name:
            raise InvalidPathError(
                f"file name {shown!r} contains a backslash",
                hint="Rename the file: manifests use '/' as the only separator.",
            )
        raise InvalidPathError(
            f"file name {shown!r} is not valid UTF-8", hint="Rename the file to a UTF-8 name."
        )
    return name


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
