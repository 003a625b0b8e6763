"""What training code read: one record per commit opened, for run tracking to pick up.

Tracking does not exist yet. Until it does, every reader (the fsspec
filesystem, ``lakecache.torch``'s datasets) announces each commit it opens
here, with where its bytes come from, and keeps per-process counters of what
it served. Tracking subscribes with :func:`subscribe` and records the
commits a run read and whether the cache was hit, without the readers
knowing about it (arrows point down: tracking may import this, not the
reverse).

Concurrency: listeners are called in the thread that opened the reader, in
the process that opened it. A DataLoader worker is another process: what it
reads is counted in its own :class:`ReadCounters`, not reported again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("lakecache.reads")

#: ``cache``: plain files on a ready cache of the site, held by a lease.
#: ``stream``: ranged reads of the lake's packs, every blob verified.
ReadSource = Literal["cache", "stream"]


@dataclass(frozen=True)
class ReadRecord:
    """One commit opened for reading: which, from where, and how much it covers."""

    dataset: str
    commit_id: str
    source: ReadSource
    #: The files and bytes selected (the whole commit, or the paths asked for).
    files: int
    bytes: int
    #: The cache read from (``source == "cache"``): its id, volume and site.
    cache_id: int | None = None
    volume: str | None = None
    site: str | None = None
    #: Who read: ``fsspec``, ``torch.CommitDataset``, ``torch.StreamingDataset``.
    reader: str = ""


ReadListener = Callable[[ReadRecord], None]

# The one process-wide registry, on purpose: tracking must see the reads of
# datasets that user code builds without passing it anything.
_listeners: list[ReadListener] = []
_listeners_lock = threading.Lock()


def subscribe(listener: ReadListener) -> Callable[[], None]:
    """Call ``listener`` with every :class:`ReadRecord` from now on; returns the unsubscribe.

    A listener that raises is logged and skipped: a tracking failure never
    stops training.
    """
    with _listeners_lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def announce(record: ReadRecord) -> None:
    """Tell every subscriber that a commit was opened for reading."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(record)
        except Exception:  # noqa: BLE001 - a tracker's bug must not stop a training run
            log.exception("read listener %r failed on %s", listener, record)


class ReadCounters:
    """What one process served from one reader: files and bytes. Thread-safe."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int, files: int = 1) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes

    def __repr__(self) -> str:
        return f"ReadCounters(files={self.files}, bytes={self.bytes})"
