"""Say what an OSError means for the user, and what to do: the CLI's and the agent's words.

Errors of lakecache's own carry a message and a hint (:mod:`lakecache.errors`);
an OSError from the filesystem carries an errno and a path. This turns the
second into the first, so that a full disk, a read-only cache or a stale NFS
handle reads like any other error instead of a traceback.
"""

from __future__ import annotations

import errno

__all__ = ["explain_os_error"]


def explain_os_error(exc: OSError) -> tuple[str, str]:
    """``(message, hint)`` for ``exc``: what failed, on which path, and what to do next."""
    path = exc.filename if exc.filename is not None else None
    where = f": {path}" if path is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    name = errno.errorcode.get(exc.errno or -1)
    reason = exc.strerror or str(exc)
    message = f"{reason}{where}" + (f" ({name})" if name else "")
    subject = f"{path}" if path is not None else "the path named"
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        hint = (
            f"Check the owner and mode of {subject} and its folder (`ls -ld`), or run as a "
            "user who may write there. A cache's files and folders are read-only on "
            "purpose: pull into a folder of your own (`lakecache data pull`) to change files."
        )
    elif code in (errno.ENOSPC, errno.EDQUOT):
        hint = (
            f"The filesystem holding {subject} is full (or over its quota): free space there "
            "(`df -h` shows how much), or write somewhere else; an interrupted pull or fill "
            "resumes without fetching its verified files again."
        )
    elif code == errno.EROFS:
        hint = f"{subject} is on a read-only filesystem: remount it writable, or write elsewhere."
    elif code == errno.ESTALE:
        hint = (
            "The network filesystem's handle went stale (the export changed or was remounted "
            "on the server): remount it on this machine, then try again."
        )
    elif code in (errno.ENOENT, errno.ENOTDIR):
        hint = f"Check that {subject} exists and is a folder where one is expected."
    elif code == errno.EIO:
        hint = (
            "The disk or network filesystem reported an I/O error: check the device or the "
            "mount (`dmesg`), then try again; verified files are kept."
        )
    elif path is not None:
        hint = f"An error from the operating system while using {path}; fix it and try again."
    else:
        hint = "An error from the operating system; fix its cause and try again."
    return message, hint
