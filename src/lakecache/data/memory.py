"""Keep big transfer buffers from piling up in the C heap.

glibc serves allocations above ``M_MMAP_THRESHOLD`` with their own mmap and
gives them back on free; but after the first such free it raises the threshold
(up to 32 MiB), and the multi-MiB chunks of a large transfer then come from
per-thread heaps that keep their freed memory. Reading a 6 GiB file in 16 MiB
chunks from several threads grew a process by hundreds of MiB that way.
Pinning the threshold keeps every big buffer an mmap of its own: flat memory,
whatever the file size. A no-op where there is no glibc.
"""

from __future__ import annotations

import threading

_M_MMAP_THRESHOLD = -3
_done = False
_lock = threading.Lock()


def pin_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Serve allocations of ``nbytes`` or more by mmap for the rest of the process (once)."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        import ctypes

        try:
            # The process's own symbols hold the C library's: no find_library, which
            # runs `ldconfig -p` in a child process (a fork and exec per command).
            libc = ctypes.CDLL(None)
            libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(nbytes))
        except (OSError, AttributeError):
            pass  # not glibc: nothing to tune
