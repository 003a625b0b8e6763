"""A job's outputs: collected from its outputs folder when an attempt ends, stored in the
lake content-addressed (packed as a commit's files are), listed on the job.

What is collected, and what never is. The folder is walked without following
any symbolic link: a link (to a file or a folder, inside or outside the folder)
is left out and named, as are sockets, FIFOs and devices, and names a manifest
cannot hold (a backslash, not UTF-8). Each file is opened with ``O_NOFOLLOW`` and
checked to still be the regular file the walk saw. So a job that writes outside
its outputs (``$LAKECACHE_OUTPUTS/../x``) or points a link at a file of the
machine that runs the agent (``ln -s /etc/shadow $LAKECACHE_OUTPUTS/x``) gets
none of those bytes collected: the agent, which may read more than the job,
never reads through the job's links.

Where the bytes go. Directly (the catalog and lake at hand), the runner uploads
them itself with the data layer's pack upload (:func:`lakecache.data.commit.upload_files`).
Through a server, the runner sends them as one tar stream of the collected
files to ``PUT /jobs/{id}/outputs``, with the job's own token (which may write
its job's outputs and nothing else); the server unpacks regular files only,
under normalised names, and uploads them the same way. Either way the file list
becomes a manifest in the lake and rows on the job
(:meth:`lakecache.compute.store.ComputeStore.record_outputs`).

How much a server takes. One attempt's tar may hold at most
``Settings.max_output_bytes``: a larger ``Content-Length`` is refused (413)
before a byte is written, a body that grows past it (chunked, or lying about its
length) is stopped there and its spool removed, and the unpacked files are
bounded the same way (a sparse member cannot expand past it). The server wants
twice the declared size free on its disk (the tar, then its unpacked files) and
answers 507 otherwise, or when the disk fills up midway; nothing is kept then.
The runner records a refusal on the job's timeline ("outputs lost", with the
server's words), and a job that succeeded fails with that reason.

Downloads verify every file against its digest and write under the destination
only (names normalised, never through a symlink found there).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lakecache.compute.model import OutputFile
from lakecache.data.scan import SourceFile
from lakecache.errors import (
    InsufficientStorageError,
    InvalidPathError,
    TooLargeError,
    UserError,
)
from lakecache.lake.objects import ManifestEntry, encode_manifest, hash_bytes, manifest_key

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.lake import Lake
    from lakecache.settings import Settings

#: How many left-out names a timeline entry lists before "and N more".
SHOWN = 5


@dataclass
class OutputScan:
    """The regular files of an outputs folder, sorted by path, and what was left out."""

    files: list[SourceFile] = field(default_factory=list)
    #: (path, why) for each entry not collected.
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def describe_left_out(self) -> str:
        shown = [f"{p} ({why})" for p, why in self.left_out[:SHOWN]]
        more = len(self.left_out) - SHOWN
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def scan_outputs(root: Path) -> OutputScan:
    """Every regular file under ``root``, never following a symbolic link (see the
    module's notes). A missing folder holds nothing."""
    out = OutputScan()
    if not root.is_dir() or root.is_symlink():
        return out
    root_str = os.path.abspath(root)
    stack = [(root_str, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            out.left_out.append((prefix or ".", f"unreadable folder: {exc.strerror}"))
            continue
        for de in entries:
            rel = prefix + de.name
            if "\\" in de.name or not _utf8(de.name):
                out.left_out.append((_shown(rel), "a name a manifest cannot hold"))
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                out.left_out.append((rel, f"cannot stat: {exc.strerror}"))
                continue
            if stat.S_ISLNK(st.st_mode):
                out.left_out.append((rel, "a symbolic link: its target is not collected"))
            elif stat.S_ISDIR(st.st_mode):
                stack.append((de.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                out.files.append(
                    SourceFile(
                        rel,
                        root_str,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        0o755 if st.st_mode & 0o111 else 0o644,
                    )
                )
            else:
                out.left_out.append((rel, "not a regular file (socket, FIFO or device)"))
    out.files.sort(key=lambda f: f.path)
    out.left_out.sort()
    return out


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode()


def open_collected(f: SourceFile) -> BinaryIO:
    """Open a scanned file without following a link, and only if it is still a regular
    file (a job's leftover process may have swapped it for a link since the scan)."""
    fd = os.open(f.abspath, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidPathError(f"output {f.path!r} is no longer a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def upload_outputs(
    scan: OutputScan, *, lake: Lake, catalog: Catalog, settings: Settings
) -> tuple[str, list[OutputFile]]:
    """Put the scanned files' bytes in the lake (packed, deduplicated) and their list as
    a manifest; returns (the manifest's digest, the files)."""
    from lakecache.data.commit import upload_files

    # Links were left out by the scan; one made since is refused here, not followed.
    for f in scan.files:
        open_collected(f).close()
    digests = upload_files(list(scan.files), lake=lake, catalog=catalog, settings=settings)
    files = [
        OutputFile(f.path, d, f.size, f.mode) for f, d in zip(scan.files, digests, strict=True)
    ]
    manifest = encode_manifest([ManifestEntry(o.path, o.digest, o.size, o.mode) for o in files])
    digest = hash_bytes(manifest)
    lake.put(manifest_key(digest), manifest)
    return digest, files


def write_tar(scan: OutputScan, out: BinaryIO) -> int:
    """Write the scanned files as an uncompressed tar stream (regular files only, each read
    without following links); returns the bytes of file data written."""
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for f in scan.files:
            with open_collected(f) as fh:
                size = os.fstat(fh.fileno()).st_size
                info = tarfile.TarInfo(f.path)
                info.size = size
                info.mode = f.mode
                info.mtime = f.mtime_ns // 10**9
                tar.addfile(info, fh)
                total += size
    return total


def too_large(
    what: str, size: int, limit: int, *, so_far: bool = False, hint: str | None = None
) -> TooLargeError:
    """The refusal of ``what`` (``size`` bytes, or ``so_far`` more than that) over the
    ``max_output_bytes`` setting ``limit``."""
    got = f"more than {size}" if so_far else str(size)
    return TooLargeError(
        f"{what}: {got} bytes, over this server's limit of {limit} bytes "
        "(its setting max_output_bytes); nothing of it was kept",
        hint=hint
        or "Send less: a job writes less to $LAKECACHE_OUTPUTS, a run logs smaller "
        "artifacts (commit large results to a dataset instead); or ask the server's admin "
        "to raise max_output_bytes (LAKECACHE_MAX_OUTPUT_BYTES).",
    )


def ensure_room(folder: Path, need: int, what: str) -> None:
    """InsufficientStorageError unless ``folder``'s disk has ``need`` bytes free."""
    if shutil.disk_usage(folder).free < need:
        raise InsufficientStorageError(
            f"{what}: the server's disk has not the {need} bytes free that it needs; "
            "nothing was kept"
        )


def disk_full(exc: OSError, what: str) -> InsufficientStorageError | None:
    """The error to raise for ``exc`` (raised while writing) if it says the disk or a quota
    is full; None for any other error. The message names no server path."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return InsufficientStorageError(
        f"{what}: the server's disk filled up while writing; nothing was kept"
    )


def unpack_tar(stream: BinaryIO, dest: Path, *, max_bytes: int | None = None) -> OutputScan:
    """Unpack a tar stream of outputs into the empty folder ``dest``: regular files only,
    under normalised names (no absolute path, no ``..``); anything else is left out and
    named. Returns the scan of what was written.

    ``max_bytes`` bounds the bytes written (TooLargeError past it: a sparse member
    expands beyond the tar's own size). A full disk raises InsufficientStorageError.
    What was written is left in ``dest`` for the caller to remove."""
    from lakecache.lake.objects import normalize_path

    left_out: list[tuple[str, str]] = []
    written = 0
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isreg():
                if not member.isdir():
                    left_out.append((member.name, "not a regular file"))
                continue
            try:
                rel = normalize_path(member.name)
            except (InvalidPathError, UserError):
                left_out.append((member.name, "a name outside the outputs folder"))
                continue
            target = Path(root, *rel.split("/"))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                real_parent = os.path.realpath(target.parent)
                if real_parent != root and not real_parent.startswith(root + os.sep):
                    left_out.append((member.name, "a name outside the outputs folder"))
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fd = os.open(target, flags, 0o600)
            except OSError as exc:
                full = disk_full(exc, "unpacking the outputs")
                if full is not None:
                    raise full from None
                # A name given twice, or a file where a folder should be.
                left_out.append((member.name, f"cannot be written: {exc.strerror}"))
                continue
            src = tar.extractfile(member)
            assert src is not None  # a regular file has a body
            try:
                with os.fdopen(fd, "wb") as fh:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if max_bytes is not None and written > max_bytes:
                            raise too_large(
                                "the unpacked outputs", max_bytes, max_bytes, so_far=True
                            )
                        fh.write(chunk)
            except OSError as exc:
                full = disk_full(exc, "unpacking the outputs")
                if full is None:
                    raise
                raise full from None
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
    scan = scan_outputs(dest)
    scan.left_out = sorted(left_out + scan.left_out)
    return scan


def safe_target(dest: Path, rel: str) -> Path:
    """Where output ``rel`` goes under ``dest``: refused if the name or a symlink found in
    ``dest`` would take it outside."""
    from lakecache.lake.objects import normalize_path

    try:
        clean = normalize_path(rel)
    except UserError:
        raise InvalidPathError(
            f"output name {rel!r} would be written outside {dest}",
            hint="The job's outputs list is damaged; report it.",
        ) from None
    root = os.path.realpath(dest)
    target = Path(root, *clean.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(target.parent)
    if real != root and not real.startswith(root + os.sep):
        raise InvalidPathError(
            f"output {clean!r} would be written outside {dest} (a symlink in the way)",
            hint="Remove the symlink from the destination folder, or pick another one.",
        )
    if target.is_symlink():
        raise InvalidPathError(
            f"{target} is a symlink; an output is never written through one",
            hint="Remove it, or download into an empty folder.",
        )
    return target


def write_verified(target: Path, chunks: Iterator[bytes], out: OutputFile) -> None:
    """Write ``chunks`` to ``target`` through a temporary name, checking that they hash to
    the output's digest and size; nothing is left at ``target`` if they do not."""
    import blake3

    from lakecache.errors import IntegrityError

    tmp = target.with_name(f".{target.name}.lakecache-tmp-{os.getpid()}")
    h = blake3.blake3()
    n = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                h.update(chunk)
                n += len(chunk)
                fh.write(chunk)
        if n != out.size or h.hexdigest() != out.digest:
            raise IntegrityError(
                f"output {out.path!r}: the bytes read do not match its digest",
                hint="Download it again; if it keeps failing, the lake lost or damaged it.",
            )
        os.chmod(tmp, out.mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
