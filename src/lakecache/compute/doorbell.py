"""The doorbell: job runners wake when compute changes, instead of at their next poll.

The store rings it after each change a runner acts on (jobs queued, placed, ended,
given back, cancelled); a runner waits on it between passes, up to its interval,
and starts its next pass as soon as it rings. Polling stays the safety net: a
ring lost (or a catalog that cannot ring) costs at most one interval.

How a ring travels, by catalog:

* every runner of the process that rang wakes at once (a condition);
* SQLite (all its processes share a machine): a file beside the database, whose
  change time a waiting runner checks every few milliseconds (a ``stat``);
* PostgreSQL: ``NOTIFY lakecache_jobs`` after the commit; a waiting runner ``LISTEN``\\ s on a
  connection of its own;
* a catalog reached through a server: the server's store rings in its process; a
  remote runner polls the server at its interval.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

log = logging.getLogger("lakecache.jobs")

#: Seconds between a waiting runner's looks at the bell file (SQLite) or the
#: notifications (PostgreSQL).
LOOK_EVERY = 0.005
CHANNEL = "lakecache_jobs"

_rings: dict[str, int] = {}
_cv = threading.Condition()


def _key(catalog: Any) -> str | None:
    engine = getattr(catalog, "_engine", None)
    return None if engine is None else str(engine.url)


def _bell_file(catalog: Any) -> Path | None:
    engine = getattr(catalog, "_engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return None
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        return None
    return Path(f"{database}.jobs-bell")


def ring(catalog: Any) -> None:
    """Wake the runners of ``catalog``: call it once a change has committed."""
    key = _key(catalog)
    if key is None:
        return
    engine = catalog._engine
    with _cv:
        if engine.dialect.name != "postgresql":
            # Under the lock with the count: a runner of this process hears both as one
            # ring (it reads both under the lock), never the file and then the count.
            _ring_file(catalog)
        _rings[key] = _rings.get(key, 0) + 1
        _cv.notify_all()
    if engine.dialect.name == "postgresql":
        try:
            with engine.connect() as c:
                c.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANNEL})
                c.commit()
        except Exception as exc:  # noqa: BLE001 - a lost ring costs one interval, no more
            log.debug("doorbell: no notification sent: %s", exc)


def _ring_file(catalog: Any) -> None:
    bell = _bell_file(catalog)
    if bell is not None:
        with contextlib.suppress(OSError):
            # A new write each time: its change time moves even within one clock tick.
            fd = os.open(bell, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)
            if os.stat(bell).st_size > 1 << 16:
                os.truncate(bell, 0)


class Listener:
    """What one runner waits on: :meth:`wait` returns early when its catalog rings."""

    def __init__(self, catalog: Any) -> None:
        self._key = _key(catalog)
        self._bell = _bell_file(catalog)
        self._seen = self._local()
        self._file_seen = self._file_state()
        self._pg: Any = None
        engine = getattr(catalog, "_engine", None)
        if engine is not None and engine.dialect.name == "postgresql":
            try:
                self._pg = engine.raw_connection()
                driver = self._pg.driver_connection
                driver.autocommit = True
                driver.execute(f"LISTEN {CHANNEL}")
            except Exception as exc:  # noqa: BLE001 - without it, polling alone
                log.warning("doorbell: not listening on PostgreSQL: %s", exc)
                self.close()

    def _local(self) -> int:
        return 0 if self._key is None else _rings.get(self._key, 0)

    def _file_state(self) -> tuple[int, int] | None:
        if self._bell is None:
            return None
        try:
            st = os.stat(self._bell)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait up to ``timeout`` s for a ring (or ``stop``); True if it rang. ``timeout``
        0: whether it rang since the last call, without waiting."""
        if timeout <= 0 and self._pg is not None:
            if self._notified(0):
                self._notified(0, drain=True)  # rings meanwhile: one wake for all
                return True
            return False
        deadline = time.monotonic() + timeout
        while True:
            # On PostgreSQL every ring arrives as a notification (this process's too).
            if self._pg is None and self._rang():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            step = min(left, LOOK_EVERY)
            if self._pg is not None:
                if self._notified(step):
                    self._notified(0.001, drain=True)  # rings meanwhile: one wake for all
                    return True
            else:
                with _cv:
                    if self._local() == self._seen:
                        _cv.wait(step)

    def _rang(self) -> bool:
        with _cv:  # a ring of this process moves both at once (see ring)
            local, state = self._local(), self._file_state()
        if local != self._seen:
            self._seen = local
            self._file_seen = state  # the same ring, heard twice otherwise
            return True
        if state != self._file_seen:
            self._file_seen = state
            return state is not None
        return False

    def _notified(self, timeout: float, *, drain: bool = False) -> bool:
        if self._pg is None:
            return False
        try:
            driver = self._pg.driver_connection
            got = driver.notifies(timeout=timeout, stop_after=None if drain else 1)
            return sum(1 for _ in got) > 0
        except Exception as exc:  # noqa: BLE001 - the connection broke: poll from now on
            log.warning("doorbell: stopped listening on PostgreSQL: %s", exc)
            self.close()
            return False

    def close(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.invalidate()  # never back to the pool with LISTEN on it
                self._pg.close()
            self._pg = None
