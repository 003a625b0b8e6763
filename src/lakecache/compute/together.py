"""Group commit: catalog writes of this process that arrive together share a transaction.

A burst of short jobs ends many attempts at once, and each end is a few small writes
(the job's state, its attempt, a timeline entry; tracking's end of the attempt's run).
Each in a transaction of its own costs a ``BEGIN IMMEDIATE`` and a commit apiece, and
on SQLite every writer of every agent waits its turn for the one write lock. Through
:data:`together`, a caller still waits for its own write to be committed, as with a
transaction of its own, but pays for a share of one: the first caller to find no
transaction under way runs every write queued by then; if one of them fails the batch
is rolled back and each write is run alone, so that one bad write fails only its caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class GroupCommit:
    """Writes of this process's threads, committed together (see the module's notes)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: list[_Write] = []
        self._leading = False

    def write(self, catalog: Any, step: Callable[[Any], Any]) -> Any:
        """Run ``step(conn)`` in a write transaction of ``catalog``; return what it returns
        once committed (what it raises is raised here). ``step`` must not write through
        this group commit itself."""
        item = _Write(catalog, step)
        with self._cv:
            self._queue.append(item)
            while not item.done:
                if self._leading:
                    self._cv.wait()
                    continue
                self._leading = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._cv.acquire()
                    self._leading = False
                    for w in batch:
                        if not w.ran:  # the leader was interrupted: never a silent success
                            w.error = RuntimeError("the write was not run: its batch stopped")
                        w.done = True
                    self._cv.notify_all()
        if item.error is not None:
            raise item.error
        return item.result

    @staticmethod
    def _commit(batch: list[_Write]) -> None:
        by_catalog: dict[int, list[_Write]] = {}
        for w in batch:
            by_catalog.setdefault(id(w.catalog), []).append(w)
        for writes in by_catalog.values():
            try:
                with writes[0].catalog._write() as conn:
                    results = [w.step(conn) for w in writes]
            except Exception as exc:  # noqa: BLE001 - raised to its caller(s)
                if len(writes) == 1:
                    writes[0].error, writes[0].ran = exc, True
                    continue
            else:
                for w, result in zip(writes, results, strict=True):
                    w.result, w.ran = result, True
                continue
            for w in writes:  # which one failed? each alone, its error its own
                try:
                    with w.catalog._write() as conn:
                        w.result = w.step(conn)
                except Exception as exc:  # noqa: BLE001 - raised to its caller
                    w.error = exc
                w.ran = True


class _Write:
    """One caller's write, waiting for its transaction."""

    def __init__(self, catalog: Any, step: Callable[[Any], Any]) -> None:
        self.catalog = catalog
        self.step = step
        self.result: Any = None
        self.error: Exception | None = None
        #: Its result or error is set (``done`` alone: the batch ended, perhaps early).
        self.ran = False
        self.done = False


#: The process's group commit: the job runner's ends and tracking's per-attempt writes.
together = GroupCommit()
